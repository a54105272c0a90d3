//! Property tests of the weight-file readers beyond the safetensors header: LoRA files (real
//! ones with bytes changed anywhere, and headers naming odd shapes), single-file checkpoints
//! mapped to diffusers names (the tiny model's LDM file with its header mangled) and manifests.
//! Each gives a value or a typed error — never a panic or an absurd allocation.

use std::path::PathBuf;

use darkroom_weights::checkpoint::{diffusers_names, Layout};
use darkroom_weights::lora::Lora;
use darkroom_weights::testing::tiny_ldm_checkpoint;
use darkroom_weights::{Header, Manifest};
use proptest::prelude::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn layout() -> Layout {
    let read = |p: &str| std::fs::read_to_string(fixtures().join("tiny-sd").join(p)).unwrap();
    Layout::from_configs(&read("unet/config.json"), &read("vae/config.json")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mangled_loras_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), header_only in any::<bool>()) {
        let mut bytes = std::fs::read(fixtures().join("lora/tiny-lora.safetensors")).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 8;
        let span = if header_only { header_len } else { bytes.len() };
        for (at, v) in flips {
            let i = at.index(span);
            bytes[i] = v;
        }
        let _ = Lora::check_header(&bytes, bytes.len() as u64);
        if let Ok(lora) = Lora::from_bytes(&bytes) {
            for update in lora.updates.values() {
                prop_assert_eq!(update.down.len(), update.rank * update.cols);
                prop_assert_eq!(update.up.len(), update.rows * update.rank);
            }
        }
    }

    #[test]
    fn lora_shapes_from_the_header_are_checked(down in proptest::collection::vec(0u64..5, 0..4), up in proptest::collection::vec(0u64..5, 0..4)) {
        let n = |s: &[u64]| s.iter().product::<u64>() as usize * 4;
        let tensors = vec![
            ("lora_unet_a.lora_down.weight".to_string(), "F32", down.clone(), vec![0u8; n(&down)]),
            ("lora_unet_a.lora_up.weight".to_string(), "F32", up.clone(), vec![0u8; n(&up)]),
            ("lora_unet_a.alpha".to_string(), "F32", vec![], vec![0u8; 4]),
        ];
        let bytes = darkroom_weights::testing::safetensors_bytes(&tensors);
        if let Ok(lora) = Lora::from_bytes(&bytes) {
            let u = &lora.updates["lora_unet_a"];
            prop_assert_eq!(u.down.len(), u.rank * u.cols);
            prop_assert_eq!(u.up.len(), u.rows * u.rank);
        }
    }

    #[test]
    fn mangled_checkpoint_headers_map_or_fail(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = tiny_ldm_checkpoint(&fixtures());
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 8;
        for (at, v) in flips {
            let i = 8 + at.index(header_len - 8);
            bytes[i] = v;
        }
        let layout = layout();
        if let Ok(header) = Header::parse(&bytes, bytes.len() as u64) {
            for t in &header.tensors {
                let _ = diffusers_names(&t.name, &layout);
            }
        }
    }

    #[test]
    fn manifests_never_panic(text in "\\PC{0,200}") {
        let _ = Manifest::parse(&text, "fuzz.toml");
    }

    #[test]
    fn manifests_from_their_own_lines(lines in proptest::collection::vec(proptest::sample::select(&[
        "id = \"a\"", "id = \"..\"", "id = \"a/b\"", "name = \"A\"", "family = \"sd15\"", "family = \"nope\"",
        "[license]", "name = \"MIT\"", "url = \"https://x\"", "[source]", "repo = \"a/b\"", "revision = \"main\"",
        "[[files]]", "path = \"unet/x.safetensors\"", "path = \"../x\"", "path = \"/etc/passwd\"", "size = 12",
        "size = -1", "sha256 = \"00\"", "component = \"unet\"", "[defaults]", "steps = 0", "width = 99999999999",
    ][..]), 0..24)) {
        if let Ok(m) = Manifest::parse(&lines.join("\n"), "fuzz.toml") {
            prop_assert!(darkroom_weights::manifest::check_id(&m.id).is_ok());
            for f in &m.files {
                prop_assert!(!f.path.contains("..") && !f.path.starts_with('/'));
            }
        }
    }
}
