//! Property tests of the embedded widget's message validator (`darkroom_pipeline::host`):
//! arbitrary messages from a host page — any shape, the protocol's keys with values of every
//! type, hostile PNGs — give a message, an ignore or an answer, and a generate request's params
//! give a recipe the app's own rules accept or an error: never a panic or a hang, never a
//! recipe past a limit, never one using the user's LoRAs.

use darkroom_pipeline::host::{read_message, read_params, Message, Value, KEYS, MAX_LIST};
use darkroom_pipeline::{ModelInfo, Recipe};
use proptest::prelude::*;

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgba);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&vec![200; (width * height * 4) as usize]).unwrap();
    drop(writer);
    out
}

/// A small PNG whose header claims `width` x `height` (its CRC fixed, its data far too short).
fn claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(1, 1);
    // Signature (8), IHDR length (4), "IHDR" (4), then width and height.
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    bytes
}

fn pngs() -> Vec<Vec<u8>> {
    let good = png(64, 48);
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    vec![good, png(8, 8), png(1, 1), claiming(30000, 30000), claiming(0, 0), truncated, b"\x89PNG".to_vec()]
}

const TEXTS: &[&str] = &[
    "hello",
    "generate",
    "cancel",
    "a red boat",
    "",
    "euler",
    "Euler a",
    "dpm++ 2m karras",
    "canny",
    "depth",
    "controlnet-canny",
    "sd-turbo",
    "../x",
    "<lora:face:0.8>",
    "a cat <lora:x:1> BREAK (dog:1.2)",
    "__colors__",
    "{a|b}",
    "😀",
];

const NUMBERS: &[f64] = &[
    0.0,
    1.0,
    -1.0,
    0.5,
    1.5,
    2.0,
    7.5,
    48.0,
    64.0,
    65.0,
    4e9,
    9_007_199_254_740_991.0,
    1e300,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
];

fn leaf() -> impl Strategy<Value = Value> {
    let images = pngs();
    prop_oneof![
        Just(Value::Absent),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(NUMBERS).prop_map(Value::Number),
        any::<f64>().prop_map(Value::Number),
        prop::sample::select(TEXTS).prop_map(|t| Value::Text(t.to_string())),
        ".{0,40}".prop_map(Value::Text),
        (1usize..10).prop_map(|n| Value::Text("x".repeat(n * 30_000))),
        prop::sample::select(images).prop_map(Value::Bytes),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
        any::<usize>().prop_map(Value::Oversized),
        Just(Value::Other),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, MAX_LIST as u32, |inner| {
        let key = prop_oneof![prop::sample::select(KEYS).prop_map(str::to_string), "[a-z]{1,6}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..=MAX_LIST).prop_map(Value::List),
            prop::collection::vec((key, inner), 0..10).prop_map(Value::Map),
        ]
    })
}

/// A key's value: mostly a plausible one (so the validator's later checks are reached), else
/// anything.
fn field(plausible: Vec<Value>) -> impl Strategy<Value = Value> {
    prop_oneof![3 => prop::sample::select(plausible), 1 => leaf()]
}

fn num(values: &[f64]) -> Vec<Value> {
    values.iter().map(|n| Value::Number(*n)).collect()
}

fn texts(values: &[&str]) -> Vec<Value> {
    values.iter().map(|t| Value::Text(t.to_string())).collect()
}

/// Params built from the keys the validator reads, each present or not.
fn params() -> impl Strategy<Value = Value> {
    let image = vec![Value::Bytes(png(64, 48)), Value::Absent];
    let unit = (
        field(texts(&["controlnet-canny", "controlnet-depth"])),
        field(vec![Value::Bytes(png(64, 48))]),
        field(texts(&["canny", "none", "scribble"])),
        prop::collection::vec(
            (
                prop::sample::select(&["weight", "start", "end", "low", "high"][..]),
                field(num(&[0.0, 0.5, 1.0, 100.0])),
            ),
            0..4,
        ),
    )
        .prop_map(|(model, image, pre, numbers)| {
            let mut pairs =
                vec![("model".to_string(), model), ("image".to_string(), image), ("pre".to_string(), pre)];
            pairs.extend(numbers.into_iter().map(|(k, v)| (k.to_string(), v)));
            Value::Map(pairs)
        });
    let plain = (
        field(texts(TEXTS)),
        field(texts(&["", "blurry"])),
        field(texts(&["euler", "Euler a", "DPM++ 2M Karras"])),
        field(num(&[0.0, 21.0, 4e9])),
        field(num(&[1.0, 2.0, 4.0])),
        field(num(&[1.0, 7.5])),
        field(vec![Value::Absent, Value::Number(64.0)]),
        field(vec![Value::Absent, Value::Number(48.0)]),
        field(vec![Value::Absent, Value::Number(0.5), Value::Number(1.0)]),
    );
    (plain, field(image.clone()), field(image), prop::option::of(prop::collection::vec(unit, 0..=MAX_LIST)))
        .prop_map(
            |(
                (prompt, negative, sampler, seed, steps, cfg, width, height, strength),
                init,
                mask,
                controls,
            )| {
                let mut pairs: Vec<(String, Value)> = [
                    ("prompt", prompt),
                    ("negative", negative),
                    ("sampler", sampler),
                    ("seed", seed),
                    ("steps", steps),
                    ("cfg", cfg),
                    ("width", width),
                    ("height", height),
                    ("strength", strength),
                    ("init", init),
                    ("mask", mask),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                if let Some(units) = controls {
                    pairs.push(("controls".into(), Value::List(units)));
                }
                Value::Map(pairs)
            },
        )
}

fn base() -> Recipe {
    Recipe { steps: 1, width: 64, height: 48, ..Recipe::default() }
}

fn check(params: &Value, model: &ModelInfo) {
    let Ok(r) = read_params(params, &base(), model) else { return };
    r.run_recipe().validate(model).expect("an accepted request passes the app's own checks");
    assert!(r.recipe.loras().is_empty(), "a host's request uses a LoRA: {:?}", r.recipe.prompt);
    assert_eq!((r.recipe.batch_size, r.recipe.batch_count), (1, 1));
    assert_eq!((r.recipe.preset.as_ref(), r.recipe.template.as_ref()), (None, None));
    assert!(r.recipe.hires.is_none() && r.recipe.sd_upscale.is_none() && !r.recipe.draft);
    assert_eq!(r.recipe.controls.len(), r.control_images.len());
    assert!(r.recipe.controls.len() <= 3);
    assert!(r.mask.is_none() || r.init.is_some());
    for image in r.init.iter().chain(&r.mask).chain(&r.control_images) {
        assert!(image.width * image.height <= 8192 * 8192, "{}x{}", image.width, image.height);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn any_message_is_read_or_refused(data in value()) {
        if let Ok(Message::Generate { params, .. }) = read_message(&data) {
            check(&params, &ModelInfo::stable_diffusion("tiny", false));
        }
    }

    #[test]
    fn any_params_give_a_checked_recipe_or_an_error(params in params(), sdxl in any::<bool>()) {
        let model = ModelInfo { sdxl, ..ModelInfo::stable_diffusion("m", false) };
        check(&params, &model);
    }
}

/// The generated params reach the end of the validator: some are accepted, some with control
/// units and init images (else the properties above would hold vacuously).
#[test]
fn the_generated_params_reach_accepted_requests() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let model = ModelInfo::stable_diffusion("tiny", false);
    let mut runner = TestRunner::deterministic();
    let (mut accepted, mut with_controls, mut with_init) = (0, 0, 0);
    for _ in 0..3000 {
        let params = params().new_tree(&mut runner).unwrap().current();
        if let Ok(r) = read_params(&params, &base(), &model) {
            accepted += 1;
            with_controls += usize::from(!r.recipe.controls.is_empty());
            with_init += usize::from(r.init.is_some());
        }
    }
    assert!(
        accepted >= 30 && with_controls >= 1 && with_init >= 1,
        "{accepted} accepted, {with_controls} with controls, {with_init} with init"
    );
}
