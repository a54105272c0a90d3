//! Property tests of every config reader: real configs with any number field set to zero, to a
//! huge or negative value, or removed, give a typed error or a config whose sizes are in range —
//! never a panic (a division by zero groups, a shift past the word) or an absurd size that a
//! later allocation would follow.

use std::path::PathBuf;

use darkroom_models::clip_vision::ClipVisionConfig;
use darkroom_models::config::{ClipTextConfig, ControlNetConfig, UNet2DConditionConfig, MAX_CONFIG_VALUE};
use darkroom_models::vae::AutoencoderKLConfig;
use proptest::prelude::*;
use serde_json::Value;

fn fixture(path: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(path);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Paths of every number in `v` (object keys and array indices).
fn number_paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Number(_) => out.push(at.clone()),
        Value::Object(map) => {
            for (k, child) in map {
                at.push(k.clone());
                number_paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                at.push(i.to_string());
                number_paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn slot<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, key| match v {
        Value::Object(map) => map.get_mut(key).unwrap(),
        Value::Array(items) => &mut items[key.parse::<usize>().unwrap()],
        _ => unreachable!(),
    })
}

const VALUES: [&str; 10] =
    ["0", "1", "3", "7", "-1", "65537", "1099511627776", "18446744073709551615", "1e300", "0.5"];

type Reader = fn(&str) -> Result<(), String>;

fn readers() -> Vec<(&'static str, Reader)> {
    vec![
        ("tiny-sd/unet/config.json", |t| {
            UNet2DConditionConfig::from_json(t).map(drop).map_err(|e| e.to_string())
        }),
        ("tiny-sdxl/unet/config.json", |t| {
            UNet2DConditionConfig::from_json(t).map(drop).map_err(|e| e.to_string())
        }),
        ("tiny-sd/vae/config.json", |t| {
            AutoencoderKLConfig::from_json(t).map(drop).map_err(|e| e.to_string())
        }),
        ("tiny-sd/text_encoder/config.json", |t| {
            ClipTextConfig::from_json(t).map(drop).map_err(|e| e.to_string())
        }),
        ("tiny-sdxl/text_encoder_2/config.json", |t| {
            ClipTextConfig::from_json(t).map(drop).map_err(|e| e.to_string())
        }),
        ("controlnet/tiny-controlnet-a/config.json", |t| {
            ControlNetConfig::from_json(t).map(|c| assert!(c.image_factor() > 0)).map_err(|e| e.to_string())
        }),
        ("clip-score/model/config.json", |t| {
            ClipVisionConfig::from_clip_json(t).map(drop).map_err(|e| e.to_string())?;
            ClipTextConfig::from_clip_json(t).map(drop).map_err(|e| e.to_string())
        }),
    ]
}

#[test]
fn the_fixture_configs_read() {
    for (path, read) in readers() {
        read(&fixture(path).to_string()).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn zero_groups_and_absurd_sizes_are_named() {
    let mut unet = fixture("tiny-sd/unet/config.json");
    unet["norm_num_groups"] = 0.into();
    let err = UNet2DConditionConfig::from_json(&unet.to_string()).unwrap_err().to_string();
    assert!(err.contains("norm_num_groups is 0"), "{err}");
    let mut vae = fixture("tiny-sd/vae/config.json");
    vae["norm_num_groups"] = 0.into();
    let err = AutoencoderKLConfig::from_json(&vae.to_string()).unwrap_err().to_string();
    assert!(err.contains("norm_num_groups is 0"), "{err}");
    let mut clip = fixture("tiny-sd/text_encoder/config.json");
    clip["hidden_size"] = (MAX_CONFIG_VALUE as u64 * 4).into();
    let err = ClipTextConfig::from_json(&clip.to_string()).unwrap_err().to_string();
    assert!(err.contains("hidden_size is 262144"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn mutated_configs_never_panic(
        which in 0usize..7,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..VALUES.len(), any::<bool>()), 1..4),
    ) {
        let (path, read) = readers()[which];
        let mut config = fixture(path);
        let mut paths = Vec::new();
        number_paths(&config, &mut Vec::new(), &mut paths);
        for (index, value, remove) in edits {
            let at = index.get(&paths).clone();
            if remove && at.len() == 1 {
                config.as_object_mut().unwrap().remove(&at[0]);
            } else {
                *slot(&mut config, &at) = serde_json::from_str(VALUES[value]).unwrap();
            }
            paths.clear();
            number_paths(&config, &mut Vec::new(), &mut paths);
            if paths.is_empty() {
                break;
            }
        }
        let _ = read(&config.to_string());
    }
}
