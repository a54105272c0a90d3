//! Schedules against diffusers' tables (tests/reference/scheduler_reference.py).

use darkroom_pipeline::schedulers::{NoiseScheduleConfig, Sampler, Spacing};
use darkroom_weights::SafetensorsFile;

#[test]
fn schedules_match_diffusers_for_every_sampler_and_step_count() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/schedulers.safetensors");
    let file = SafetensorsFile::from_bytes(std::fs::read(path).unwrap()).unwrap();
    let get = |name: &str| file.header.get(name).map(|info| file.to_f32(info).unwrap());
    let config = NoiseScheduleConfig::sd();

    let ac = config.alphas_cumprod();
    let want = get("alphas_cumprod").unwrap();
    for (i, (a, w)) in ac.iter().zip(&want).enumerate() {
        assert!((a - w).abs() <= 1e-6 * w.abs(), "alphas_cumprod[{i}]: {a} vs {w}");
    }

    let mut checked = 0;
    let default_spacing = Sampler::ALL.iter().flat_map(|&s| [1, 2, 4, 20, 25, 50].map(|n| (None, s, n)));
    let spaced =
        [(Spacing::Linspace, "linspace"), (Spacing::Leading, "leading"), (Spacing::Trailing, "trailing")]
            .into_iter()
            .flat_map(|spacing| {
                [Sampler::Euler, Sampler::EulerAncestral, Sampler::DpmPp2m, Sampler::Ddim]
                    .into_iter()
                    .flat_map(move |s| [1, 3, 4, 7, 20, 30].map(|n| (Some(spacing), s, n)))
            });
    for (spacing, sampler, steps) in default_spacing.chain(spaced) {
        {
            let (config, key) = match spacing {
                None => (config.clone(), format!("{}/{steps}", sampler.id())),
                Some((s, name)) => (
                    NoiseScheduleConfig { timestep_spacing: Some(s), ..config.clone() },
                    format!("{name}/{}/{steps}", sampler.id()),
                ),
            };
            let schedule = sampler.schedule(&config, steps).unwrap();
            let want_t = get(&format!("{key}/timesteps")).unwrap();
            let got_t: Vec<f32> = schedule.timesteps.iter().map(|&t| t as f32).collect();
            assert_eq!(got_t, want_t, "{key} timesteps");
            match (get(&format!("{key}/sigmas")), &schedule.sigmas) {
                (Some(want), Some(got)) => {
                    assert_eq!(got.len(), want.len(), "{key} sigmas");
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!((g - w).abs() <= 2e-6 * (1.0 + w.abs()), "{key} sigma {i}: {g} vs {w}");
                    }
                }
                (None, None) => {}
                (want, got) => {
                    panic!("{key}: diffusers has sigmas {}, we have {}", want.is_some(), got.is_some())
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 42 + 3 * 4 * 6);
}
