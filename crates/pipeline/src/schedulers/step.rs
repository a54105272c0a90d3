//! The samplers' updates, on the GPU: each step is one or two `lincomb` passes whose
//! coefficients come from the schedule (computed here in f64 from diffusers' f32 tables).
//! Formulas follow diffusers' `step()` of EulerDiscrete, EulerAncestralDiscrete,
//! DPMSolverMultistep (dpmsolver++, order 2, midpoint, final sigma 0), DDIM (η = 0) and LCM.

use darkroom_gpu::{ops, Gpu, GpuError, Tensor};

use super::{NoiseScheduleConfig, Sampler, Schedule};

/// What the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The noise ε.
    Epsilon,
    /// v = α·ε − σ·x₀ (SD 2.x 768-v).
    V,
}

/// A sampler running a schedule: which timesteps the UNet sees, how its input is scaled, and
/// the update from its output. img2img starts part-way (`start`).
pub struct Denoiser {
    sampler: Sampler,
    prediction: Prediction,
    schedule: Schedule,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f64,
    train_steps: usize,
    steps: usize,
    start: usize,
    /// DPM++ 2M: the previous step's x₀ and whether a step has been taken.
    previous_x0: Option<Tensor>,
    /// The config's timestep spacing (Euler's initial noise scale depends on it).
    spacing: Option<super::Spacing>,
}

/// (α_t, σ_t) of the variance-preserving form for a sigma (diffusers' `_sigma_to_alpha_sigma_t`).
fn vp(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

impl Denoiser {
    /// `strength` 1 denoises from pure noise; below 1 (img2img, inpainting) skips the first
    /// `steps − ⌊steps·strength⌋` steps as diffusers' `get_timesteps` does.
    pub fn new(
        sampler: Sampler,
        config: &NoiseScheduleConfig,
        steps: usize,
        strength: f64,
    ) -> Result<Denoiser, String> {
        if !(strength > 0.0 && strength <= 1.0) {
            return Err(format!("strength must be in (0, 1], got {strength}"));
        }
        let schedule = sampler.schedule(config, steps)?;
        let init = ((steps as f64 * strength) as usize).min(steps);
        let start = steps - init;
        if start >= steps {
            return Err(format!(
                "strength {strength} with {steps} steps leaves no step to run; raise either"
            ));
        }
        let alphas_cumprod = config.alphas_cumprod();
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] as f64 };
        Ok(Denoiser {
            sampler,
            prediction: config.prediction,
            schedule,
            alphas_cumprod,
            final_alpha_cumprod,
            train_steps: config.num_train_timesteps,
            spacing: config.timestep_spacing,
            steps,
            start,
            previous_x0: None,
        })
    }

    /// The indices of the steps to run (into the full schedule).
    pub fn step_indices(&self) -> std::ops::Range<usize> {
        self.start..self.steps
    }

    pub fn timestep(&self, i: usize) -> f64 {
        self.schedule.timesteps[i]
    }

    fn sigma(&self, i: usize) -> f64 {
        self.schedule.sigmas.as_ref().map_or(0.0, |s| s[i] as f64)
    }

    fn alpha_cumprod(&self, t: f64) -> f64 {
        self.alphas_cumprod[t as usize] as f64
    }

    /// The scale of the initial noise (pure-noise start).
    pub fn init_noise_sigma(&self) -> f64 {
        match self.sampler {
            Sampler::Euler | Sampler::EulerAncestral | Sampler::Turbo => {
                let sigmas = self.schedule.sigmas.as_ref().expect("sigma samplers have sigmas");
                let max = sigmas.iter().fold(0.0f32, |m, &s| m.max(s));
                // diffusers' Euler schedulers: σ_max under "linspace" and "trailing" spacing,
                // √(σ_max² + 1) under "leading" (in f32, as torch computes it).
                let leading = self.sampler != Sampler::Turbo && self.spacing == Some(super::Spacing::Leading);
                if leading {
                    (max * max + 1.0).sqrt() as f64
                } else {
                    max as f64
                }
            }
            _ => 1.0,
        }
    }

    /// What the latents are multiplied by before the UNet sees them at step `i`.
    pub fn input_scale(&self, i: usize) -> f64 {
        match self.sampler {
            Sampler::Euler | Sampler::EulerAncestral | Sampler::Turbo => {
                let s = self.sigma(i);
                1.0 / (s * s + 1.0).sqrt()
            }
            _ => 1.0,
        }
    }

    /// (a, b) with noised = a·x₀ + b·noise at step `i`'s noise level (img2img's start,
    /// inpainting's re-noised original).
    pub fn noise_coefficients(&self, i: usize) -> (f64, f64) {
        match self.sampler {
            Sampler::Euler | Sampler::EulerAncestral | Sampler::Turbo => (1.0, self.sigma(i)),
            Sampler::DpmPp2m | Sampler::DpmPp2mKarras => vp(self.sigma(i)),
            Sampler::Ddim | Sampler::Lcm => {
                let a = self.alpha_cumprod(self.timestep(i));
                (a.sqrt(), (1.0 - a).sqrt())
            }
        }
    }

    /// Whether step `i` draws fresh noise (Euler a every step, LCM all but the last).
    pub fn needs_noise(&self, i: usize) -> bool {
        match self.sampler {
            Sampler::EulerAncestral => true,
            Sampler::Lcm => i + 1 < self.steps,
            _ => false,
        }
    }

    /// x₀ = a·x + b·out for a model output at ᾱ (DDIM/LCM's `pred_original_sample`).
    fn x0_from_alpha(&self, alpha_cumprod: f64) -> (f64, f64) {
        let (sa, sb) = (alpha_cumprod.sqrt(), (1.0 - alpha_cumprod).sqrt());
        match self.prediction {
            Prediction::Epsilon => (1.0 / sa, -sb / sa),
            Prediction::V => (sa, -sb),
        }
    }

    /// One update: `sample` and the (guided) model output at step `i` → the next latents.
    /// `noise` is required when `needs_noise(i)`.
    pub fn step(
        &mut self,
        gpu: &Gpu,
        i: usize,
        sample: &Tensor,
        output: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor, GpuError> {
        let f = |v: f64| v as f32;
        match self.sampler {
            Sampler::Euler | Sampler::Turbo | Sampler::EulerAncestral => {
                let (sigma, next) = (self.sigma(i), self.sigma(i + 1));
                let (dt, up) = if self.sampler == Sampler::EulerAncestral {
                    let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).max(0.0).sqrt();
                    let down = (next * next - up * up).max(0.0).sqrt();
                    (down - sigma, up)
                } else {
                    (next - sigma, 0.0)
                };
                // x + dt·d with d = (x − x₀)/σ.
                let (cx, co) = match self.prediction {
                    Prediction::Epsilon => (1.0, dt),
                    Prediction::V => {
                        let s2 = sigma * sigma + 1.0;
                        (1.0 + dt * sigma / s2, dt / s2.sqrt())
                    }
                };
                match (self.sampler, noise) {
                    (Sampler::EulerAncestral, Some(n)) => {
                        ops::lincomb(gpu, &[(f(cx), sample), (f(co), output), (f(up), n)])
                    }
                    (Sampler::EulerAncestral, None) => Err(missing_noise()),
                    _ => ops::lincomb(gpu, &[(f(cx), sample), (f(co), output)]),
                }
            }
            Sampler::DpmPp2m | Sampler::DpmPp2mKarras => {
                let (sigma, next) = (self.sigma(i), self.sigma(i + 1));
                let (alpha_s, sigma_s) = vp(sigma);
                let x0 = match self.prediction {
                    Prediction::Epsilon => {
                        ops::lincomb(gpu, &[(f(1.0 / alpha_s), sample), (f(-sigma_s / alpha_s), output)])?
                    }
                    Prediction::V => ops::lincomb(gpu, &[(f(alpha_s), sample), (f(-sigma_s), output)])?,
                };
                let previous = self.previous_x0.replace(x0.clone());
                if next == 0.0 {
                    // The final step to sigma 0 is first order and lands on x₀.
                    return Ok(x0);
                }
                let (alpha_t, sigma_t) = vp(next);
                let lambda = |a: f64, s: f64| a.ln() - s.ln();
                let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
                let a = alpha_t * ((-h).exp() - 1.0);
                match previous {
                    Some(prev) if i > self.start => {
                        let (alpha_p, sigma_p) = vp(self.sigma(i - 1));
                        let r = (lambda(alpha_s, sigma_s) - lambda(alpha_p, sigma_p)) / h;
                        // x_t = σt/σs·x − A·D0 − ½A·(D0 − D_prev)/r
                        let c0 = -a - 0.5 * a / r;
                        let c1 = 0.5 * a / r;
                        ops::lincomb(gpu, &[(f(sigma_t / sigma_s), sample), (f(c0), &x0), (f(c1), &prev)])
                    }
                    _ => ops::lincomb(gpu, &[(f(sigma_t / sigma_s), sample), (f(-a), &x0)]),
                }
            }
            Sampler::Ddim => {
                let t = self.timestep(i);
                let prev_t = t - (self.train_steps / self.steps) as f64;
                let a = self.alpha_cumprod(t);
                let a_prev =
                    if prev_t >= 0.0 { self.alpha_cumprod(prev_t) } else { self.final_alpha_cumprod };
                // x_prev = √ᾱ'·x₀ + √(1−ᾱ')·ε, with x₀ and ε both linear in (x, out).
                let (x0_x, x0_o) = self.x0_from_alpha(a);
                let (eps_x, eps_o) = match self.prediction {
                    Prediction::Epsilon => (0.0, 1.0),
                    Prediction::V => ((1.0 - a).sqrt(), a.sqrt()),
                };
                let (p, q) = (a_prev.sqrt(), (1.0 - a_prev).sqrt());
                ops::lincomb(gpu, &[(f(p * x0_x + q * eps_x), sample), (f(p * x0_o + q * eps_o), output)])
            }
            Sampler::Lcm => {
                let t = self.timestep(i);
                let last = i + 1 >= self.steps;
                let prev_t = if last { t } else { self.timestep(i + 1) };
                let a = self.alpha_cumprod(t);
                let a_prev = self.alpha_cumprod(prev_t);
                let (x0_x, x0_o) = self.x0_from_alpha(a);
                let (c_skip, c_out) = lcm_boundary(t);
                // denoised = c_out·x₀ + c_skip·x; then re-noised to the next timestep.
                let (dx, d_o) = (c_out * x0_x + c_skip, c_out * x0_o);
                if last {
                    return ops::lincomb(gpu, &[(f(dx), sample), (f(d_o), output)]);
                }
                let n = noise.ok_or_else(missing_noise)?;
                let (p, q) = (a_prev.sqrt(), (1.0 - a_prev).sqrt());
                ops::lincomb(gpu, &[(f(p * dx), sample), (f(p * d_o), output), (f(q), n)])
            }
        }
    }
}

/// LCM's consistency boundary scalings (σ_data 0.5, timestep scaling 10).
fn lcm_boundary(t: f64) -> (f64, f64) {
    let (sigma_data, scaled) = (0.5f64, t * 10.0);
    let d = scaled * scaled + sigma_data * sigma_data;
    (sigma_data * sigma_data / d, scaled / d.sqrt())
}

fn missing_noise() -> GpuError {
    GpuError::Shape { op: "sampler", detail: "this step needs fresh noise".into() }
}
