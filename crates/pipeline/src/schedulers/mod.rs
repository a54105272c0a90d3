//! Samplers' timestep and sigma schedules with diffusers' numerics: the same config and step
//! count give diffusers' `timesteps` and `sigmas` (tests/fixtures/schedulers.safetensors).
//! The stepping itself (Euler, ancestral noise, DPM++ 2M's multistep update, DDIM, LCM) builds
//! on these tables.

use std::fmt;
use std::str::FromStr;

mod step;
pub use step::{Denoiser, Prediction};

/// The training noise schedule (`scheduler_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseScheduleConfig {
    pub beta_start: f64,
    pub beta_end: f64,
    /// "scaled_linear" (SD) or "linear".
    pub beta_schedule: String,
    pub num_train_timesteps: usize,
    pub steps_offset: usize,
    /// What the model predicts: the noise (SD 1.x, SD 2.x base) or v (SD 2.x 768).
    pub prediction: Prediction,
    /// DDIM/LCM's ᾱ after the last step: 1, or ᾱ₀ (SD's configs say false: ᾱ₀).
    pub set_alpha_to_one: bool,
    /// The config's `timestep_spacing`, which diffusers' `from_config` hands to whichever sampler
    /// is built from it; `None` keeps each sampler's own default.
    pub timestep_spacing: Option<Spacing>,
}

/// How `set_timesteps` spreads the inference steps over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

impl NoiseScheduleConfig {
    /// SD 1.x / 2.x and SD-Turbo (`scheduler/scheduler_config.json` of runwayml/stable-diffusion-v1-5).
    pub fn sd() -> Self {
        NoiseScheduleConfig {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            num_train_timesteps: 1000,
            steps_offset: 1,
            prediction: Prediction::Epsilon,
            set_alpha_to_one: false,
            timestep_spacing: None,
        }
    }

    /// From a diffusers `scheduler/scheduler_config.json` (any scheduler class: the training
    /// schedule is what matters; absent keys take SD's values).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("scheduler_config.json: {e}"))?;
        let sd = NoiseScheduleConfig::sd();
        let f = |k: &str, d: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
        let u = |k: &str, d: usize| v.get(k).and_then(|x| x.as_u64()).map_or(d, |x| x as usize);
        let beta_schedule = v.get("beta_schedule").and_then(|x| x.as_str()).unwrap_or("scaled_linear");
        if !matches!(beta_schedule, "scaled_linear" | "linear") {
            return Err(format!("scheduler_config.json: beta_schedule {beta_schedule:?} is not supported"));
        }
        if v.get("trained_betas").is_some_and(|x| !x.is_null()) {
            return Err("scheduler_config.json: trained_betas are not supported".into());
        }
        let prediction = match v.get("prediction_type").and_then(|x| x.as_str()).unwrap_or("epsilon") {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            other => {
                return Err(format!("scheduler_config.json: prediction_type {other:?} is not supported"))
            }
        };
        let timestep_spacing = match v.get("timestep_spacing").and_then(|x| x.as_str()) {
            None => None,
            Some("linspace") => Some(Spacing::Linspace),
            Some("leading") => Some(Spacing::Leading),
            Some("trailing") => Some(Spacing::Trailing),
            Some(other) => {
                return Err(format!("scheduler_config.json: timestep_spacing {other:?} is not supported"))
            }
        };
        let config = NoiseScheduleConfig {
            beta_start: f("beta_start", sd.beta_start),
            beta_end: f("beta_end", sd.beta_end),
            beta_schedule: beta_schedule.into(),
            num_train_timesteps: u("num_train_timesteps", sd.num_train_timesteps),
            steps_offset: u("steps_offset", 0),
            prediction,
            set_alpha_to_one: v.get("set_alpha_to_one").and_then(|x| x.as_bool()).unwrap_or(false),
            timestep_spacing,
        };
        if config.num_train_timesteps < 2 {
            return Err("scheduler_config.json: num_train_timesteps must be at least 2".into());
        }
        Ok(config)
    }

    /// ᾱ_t for t = 0 … T-1 as torch computes them: betas in f32, their cumulative product
    /// accumulated in f64 (torch's CPU accumulation type) and stored as f32.
    pub fn alphas_cumprod(&self) -> Vec<f32> {
        let n = self.num_train_timesteps;
        let (start, end, squared) = match self.beta_schedule.as_str() {
            "scaled_linear" => (self.beta_start.sqrt(), self.beta_end.sqrt(), true),
            _ => (self.beta_start, self.beta_end, false),
        };
        let mut product = 1.0f64;
        linspace(start, end, n)
            .into_iter()
            .map(|b| {
                let b = b as f32;
                let beta = if squared { b * b } else { b };
                product *= (1.0 - beta) as f64;
                product as f32
            })
            .collect()
    }
}

/// torch/numpy `linspace`: evenly spaced, both ends included, the second half counted back from
/// the end (as torch does) so the last value is exact.
fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n)
        .map(|i| if i < n / 2 { start + step * i as f64 } else { end - step * (n - 1 - i) as f64 })
        .collect()
}

/// The samplers users pick, with A1111's names accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    Euler,
    EulerAncestral,
    DpmPp2m,
    DpmPp2mKarras,
    Ddim,
    Lcm,
    /// SD-Turbo: Euler on "trailing" timesteps, 1–4 steps, no CFG.
    Turbo,
}

impl Sampler {
    pub const ALL: [Sampler; 7] = [
        Sampler::Euler,
        Sampler::EulerAncestral,
        Sampler::DpmPp2m,
        Sampler::DpmPp2mKarras,
        Sampler::Ddim,
        Sampler::Lcm,
        Sampler::Turbo,
    ];

    /// The CLI's name.
    pub fn id(self) -> &'static str {
        match self {
            Sampler::Euler => "euler",
            Sampler::EulerAncestral => "euler_a",
            Sampler::DpmPp2m => "dpmpp_2m",
            Sampler::DpmPp2mKarras => "dpmpp_2m_karras",
            Sampler::Ddim => "ddim",
            Sampler::Lcm => "lcm",
            Sampler::Turbo => "turbo",
        }
    }

    /// A1111's display name, as written into PNG metadata.
    pub fn display_name(self) -> &'static str {
        match self {
            Sampler::Euler => "Euler",
            Sampler::EulerAncestral => "Euler a",
            Sampler::DpmPp2m => "DPM++ 2M",
            Sampler::DpmPp2mKarras => "DPM++ 2M Karras",
            Sampler::Ddim => "DDIM",
            Sampler::Lcm => "LCM",
            Sampler::Turbo => "Euler (trailing)",
        }
    }
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Sampler {
    type Err = String;

    /// The CLI's ids or A1111's display names, case-insensitive.
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.trim().to_ascii_lowercase();
        Sampler::ALL
            .into_iter()
            .find(|x| x.id() == wanted || x.display_name().to_ascii_lowercase() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = Sampler::ALL.iter().map(|x| x.id()).collect();
                format!("unknown sampler {s:?}; choose one of {}", names.join(", "))
            })
    }
}

/// Recipes store a sampler by its id; A1111's display names read too.
impl serde::Serialize for Sampler {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.id())
    }
}

impl<'de> serde::Deserialize<'de> for Sampler {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A sampler's schedule for a step count: the model's timesteps, and for sigma-based samplers
/// the noise levels (one more than the timesteps, ending at 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub timesteps: Vec<f64>,
    pub sigmas: Option<Vec<f32>>,
}

/// numpy's `round`: halves go to the even neighbour.
fn round_even(v: f64) -> f64 {
    v.round_ties_even()
}

/// numpy `interp(x, 0..len, ys)`.
fn interp(x: f64, ys: &[f32]) -> f64 {
    let last = ys.len() - 1;
    if x <= 0.0 {
        return ys[0] as f64;
    }
    if x >= last as f64 {
        return ys[last] as f64;
    }
    let i = x.floor() as usize;
    let w = x - i as f64;
    ys[i] as f64 * (1.0 - w) + ys[i + 1] as f64 * w
}

/// diffusers' `_sigma_to_t`: a sigma's (fractional) timestep by interpolating in log sigma.
fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let last = log_sigmas.len() - 2;
    // The last index whose log sigma is at most ours (log sigmas increase with t).
    let low = log_sigmas.iter().take_while(|&&ls| log_sigma - ls >= 0.0).count().saturating_sub(1).min(last);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// numpy's `linspace` (what diffusers' `set_timesteps` calls): start + i·step, the last value
/// set to `end` exactly. Not torch's, which counts the second half back from the end.
fn np_linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(|i| if i + 1 == n { end } else { i as f64 * step + start }).collect()
}

/// `n` timesteps, largest first, as diffusers' Euler and DDIM `set_timesteps` space them
/// (Euler keeps them as f32, DDIM rounds to integers — `integer`).
fn spaced(spacing: Spacing, train: usize, n: usize, offset: usize, integer: bool) -> Vec<f64> {
    match spacing {
        Spacing::Linspace => np_linspace(0.0, (train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|v| if integer { round_even(v) } else { v as f32 as f64 })
            .collect(),
        Spacing::Leading => {
            let ratio = train / n;
            (0..n).rev().map(|i| (i * ratio + offset) as f64).collect()
        }
        Spacing::Trailing => {
            let ratio = train as f64 / n as f64;
            arange_down(train as f64, ratio).into_iter().map(|v| round_even(v) - 1.0).collect()
        }
    }
}

/// numpy `arange(start, 0, -step)`: start, start − step, … while above 0.
fn arange_down(start: f64, step: f64) -> Vec<f64> {
    let count = (start / step).ceil() as usize;
    (0..count).map(|i| start - step * i as f64).collect()
}

impl Sampler {
    /// diffusers' `set_timesteps(steps)` for this sampler from `config`: the config's
    /// `timestep_spacing` where it names one, else the class defaults ("linspace" for Euler,
    /// Euler a and DPM++, "leading" for DDIM); LCM's 50 original steps; "trailing" for SD-Turbo.
    pub fn schedule(self, config: &NoiseScheduleConfig, steps: usize) -> Result<Schedule, String> {
        let train = config.num_train_timesteps;
        if steps == 0 || steps > train {
            return Err(format!("steps must be between 1 and {train}, got {steps}"));
        }
        let spacing = |default: Spacing| config.timestep_spacing.unwrap_or(default);
        let ac = config.alphas_cumprod();
        // Computed in f32 like torch, then interpolated in f64 like numpy.
        let sigmas: Vec<f32> = ac.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
        let with_sigmas = |timesteps: Vec<f64>| {
            let mut s: Vec<f32> = timesteps.iter().map(|&t| interp(t, &sigmas) as f32).collect();
            s.push(0.0);
            Schedule { timesteps, sigmas: Some(s) }
        };
        Ok(match self {
            Sampler::Euler | Sampler::EulerAncestral => {
                with_sigmas(spaced(spacing(Spacing::Linspace), train, steps, config.steps_offset, false))
            }
            Sampler::Turbo => with_sigmas(spaced(Spacing::Trailing, train, steps, 0, false)),
            Sampler::DpmPp2m => {
                // DPM-Solver spaces steps + 1 points and drops the last.
                let t: Vec<f64> = match spacing(Spacing::Linspace) {
                    Spacing::Linspace => {
                        let mut t: Vec<f64> = np_linspace(0.0, (train - 1) as f64, steps + 1)
                            .into_iter()
                            .map(round_even)
                            .collect();
                        t.reverse();
                        t.pop();
                        t
                    }
                    Spacing::Leading => {
                        let ratio = train / (steps + 1);
                        (1..=steps).rev().map(|i| (i * ratio + config.steps_offset) as f64).collect()
                    }
                    Spacing::Trailing => spaced(Spacing::Trailing, train, steps, 0, true),
                };
                with_sigmas(t)
            }
            Sampler::DpmPp2mKarras => {
                let log_sigmas: Vec<f64> = sigmas.iter().map(|&s| (s as f64).ln()).collect();
                let (sigma_min, sigma_max) = (sigmas[0] as f64, sigmas[train - 1] as f64);
                let rho = 7.0;
                let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
                let karras: Vec<f64> = np_linspace(0.0, 1.0, steps)
                    .into_iter()
                    .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
                    .collect();
                let timesteps = karras.iter().map(|&s| round_even(sigma_to_t(s, &log_sigmas))).collect();
                let mut s: Vec<f32> = karras.iter().map(|&v| v as f32).collect();
                s.push(0.0);
                Schedule { timesteps, sigmas: Some(s) }
            }
            Sampler::Ddim => Schedule {
                timesteps: spaced(spacing(Spacing::Leading), train, steps, config.steps_offset, true),
                sigmas: None,
            },
            Sampler::Lcm => {
                let original = 50usize;
                if steps > original {
                    return Err(format!("LCM runs at most {original} steps, got {steps}"));
                }
                let k = train / original;
                let origin: Vec<usize> = (1..=original).rev().map(|i| i * k - 1).collect();
                let timesteps = (0..steps)
                    .map(|i| origin[(i as f64 * original as f64 / steps as f64).floor() as usize] as f64)
                    .collect();
                Schedule { timesteps, sigmas: None }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_both_ways() {
        for s in Sampler::ALL {
            assert_eq!(s.id().parse::<Sampler>(), Ok(s));
            assert_eq!(s.display_name().parse::<Sampler>(), Ok(s));
        }
        assert_eq!("euler A".parse::<Sampler>(), Ok(Sampler::EulerAncestral));
        let err = "k_lms".parse::<Sampler>().unwrap_err();
        assert!(err.contains("dpmpp_2m_karras"), "{err}");
    }

    #[test]
    fn linspace_hits_both_ends() {
        assert_eq!(linspace(0.0, 999.0, 4), vec![0.0, 333.0, 666.0, 999.0]);
        assert_eq!(linspace(2.0, 2.0, 1), vec![2.0]);
    }

    #[test]
    fn bad_step_counts_are_errors() {
        let cfg = NoiseScheduleConfig::sd();
        assert!(Sampler::Euler.schedule(&cfg, 0).is_err());
        assert!(Sampler::Lcm.schedule(&cfg, 51).is_err());
    }
}
