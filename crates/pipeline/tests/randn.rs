//! TorchGenerator::randn against torch.randn dumps (tests/reference/randn_reference.py).

use darkroom_pipeline::rng::TorchGenerator;
use darkroom_weights::SafetensorsFile;

fn reference() -> SafetensorsFile {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/randn.safetensors");
    SafetensorsFile::from_bytes(std::fs::read(path).unwrap()).unwrap()
}

fn assert_matches(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // torch's vectorised log/sin/cos may differ from ours in the last bits.
        assert!((g - w).abs() <= 2e-6 * (1.0 + w.abs()), "{what}[{i}]: {g} vs torch {w}");
    }
}

#[test]
fn randn_matches_torch_for_latent_sizes_and_odd_sizes() {
    let file = reference();
    let mut checked = Vec::new();
    for info in &file.header.tensors {
        let Some((seed, n)) = info.name.split_once('/') else { continue };
        let (Ok(seed), Ok(n)) = (seed.parse::<u64>(), n.parse::<usize>()) else { continue };
        let want = file.to_f32(info).unwrap();
        let got = TorchGenerator::manual_seed(seed).randn(n);
        assert_matches(&got, &want, &info.name);
        checked.push(n);
    }
    // 16, a small latent, a 64x64 latent, sizes off the 16-grid, and the scalar path below 16.
    assert_eq!(checked.len(), 7, "{checked:?}");
    assert!(checked.contains(&16384) && checked.contains(&37) && checked.contains(&5));
}

#[test]
fn consecutive_draws_continue_the_stream() {
    let file = reference();
    let get = |name: &str| file.to_f32(file.header.get(name).unwrap()).unwrap();
    let mut g = TorchGenerator::manual_seed(5);
    assert_matches(&g.randn(40), &get("5/then/first"), "first draw");
    assert_matches(&g.randn(24), &get("5/then/second"), "second draw");
}
