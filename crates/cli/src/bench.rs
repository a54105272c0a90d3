//! `darkroom bench kernels`: GFLOP/s of the tiled kernels at Stable Diffusion UNet shapes, each
//! beside a plain one-invocation-per-output kernel of ours measured in the same run and against
//! the adapter's practical peak (our best large matmul).
//! `darkroom bench models`: text encode, UNet step and VAE decode times of a real model
//! architecture (seeded weights), the GPU memory they hold, and a per-kernel split of one step.

use std::time::Instant;

use darkroom_gpu::ops::{self, naive, Conv2d};
use darkroom_gpu::reference::TestRng;
use darkroom_gpu::{DType, GemmTiles, Gpu, GpuError, Tensor, Weight, WeightFormat};
use darkroom_models::clip::ClipTextModel;
use darkroom_models::config::{ClipTextConfig, UNet2DConditionConfig};
use darkroom_models::unet::UNet2DConditionModel;
use darkroom_models::vae::{AutoencoderKLConfig, VaeDecoder};
use darkroom_models::ModelError;
use darkroom_models::{QuantPolicy, WeightStore};

pub struct Options {
    /// Quarter-size shapes, for a quick look on slow (software) adapters.
    pub quick: bool,
    pub runs: usize,
}

/// Median wall time of `runs` executions of `f`, each submitted and waited for, after one
/// warm-up run that also compiles the pipelines.
fn time<E: From<GpuError>>(
    gpu: &Gpu,
    runs: usize,
    mut f: impl FnMut() -> Result<Tensor, E>,
) -> Result<f64, E> {
    f()?;
    gpu.finish()?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let out = f()?;
        gpu.finish()?;
        samples.push(start.elapsed().as_secs_f64());
        drop(out);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    Ok(samples[samples.len() / 2])
}

/// Runs `f` with the GEMM forced to its 64x64 tile (the only one before the 128x128 tile).
fn small_tiles<T>(gpu: &Gpu, f: impl FnOnce() -> Result<T, GpuError>) -> Result<T, GpuError> {
    gpu.set_gemm_tiles(GemmTiles::Small);
    let out = f();
    gpu.set_gemm_tiles(GemmTiles::Auto);
    out
}

struct Row {
    name: String,
    gflop: f64,
    ours: f64,
    /// The kernel this one replaced, same run (NaN where there is none).
    before: f64,
    /// A plain one-invocation-per-output kernel, same run (NaN where there is none).
    plain: f64,
    /// The peak this row is a share of: the f32 or the f16 GEMM's.
    f16: bool,
    /// Largest difference between our output and the before kernel's (NaN where none ran).
    diff: f64,
}

/// Largest |a − b| between two runs' outputs, relative to b's largest magnitude: a speed-up
/// that changed the result would show here.
fn difference<E: From<GpuError>>(
    gpu: &Gpu,
    ours: impl FnOnce() -> Result<Tensor, E>,
    before: impl FnOnce() -> Result<Tensor, E>,
) -> Result<f64, E> {
    let a = pollster::block_on(ours()?.read_f32(gpu))?;
    let b = pollster::block_on(before()?.read_f32(gpu))?;
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    Ok(a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) as f64 / scale as f64)
}

fn tensor(gpu: &Gpu, rng: &mut TestRng, shape: &[usize], dtype: DType) -> Result<Tensor, GpuError> {
    Tensor::from_f32(gpu, shape, &rng.vec(shape.iter().product()), dtype)
}

pub fn kernels(gpu: &Gpu, opts: &Options) -> Result<(), GpuError> {
    let pixels = if opts.quick { 1024 } else { 4096 };
    let side = if opts.quick { 32 } else { 64 };
    let mut rng = TestRng::new(1);
    let mut rows = Vec::new();
    let mut dtypes = vec![DType::F32];
    if gpu.capabilities().shader_f16 {
        dtypes.push(DType::F16);
    }
    let label = |dtype: DType| if dtype == DType::F16 { "f16" } else { "f32" };

    // The practical peak: our GEMM on a large square product, where tiling overheads vanish
    // (f32, and f16 activations with f16 weights where the adapter has shader-f16).
    let mut peak = [f64::NAN; 2];
    for &dtype in &dtypes {
        let n = if opts.quick { 1024 } else { 4096 };
        let a = tensor(gpu, &mut rng, &[n, n], dtype)?;
        let format = if dtype == DType::F16 { WeightFormat::F16 } else { WeightFormat::F32 };
        let w = Weight::from_f32(gpu, n, n, &rng.vec(n * n), None, format)?;
        let gflop = 2.0 * (n as f64).powi(3) / 1e9;
        let ours = time(gpu, opts.runs, || ops::linear(gpu, &a, &w))?;
        let before = small_tiles(gpu, || time(gpu, opts.runs, || ops::linear(gpu, &a, &w)))?;
        let diff =
            difference(gpu, || ops::linear(gpu, &a, &w), || small_tiles(gpu, || ops::linear(gpu, &a, &w)))?;
        let f16 = dtype == DType::F16;
        rows.push(Row {
            name: format!("matmul {n}x{n}x{n} {} (peak reference)", label(dtype)),
            gflop,
            ours,
            before,
            plain: f64::NAN,
            f16,
            diff,
        });
        peak[usize::from(f16)] = gflop / ours;
    }

    for (k, n) in [(320, 320), (320, 1280)] {
        let x = tensor(gpu, &mut rng, &[pixels, k], DType::F32)?;
        let w_values = rng.vec(n * k);
        let w = Weight::from_f32(gpu, n, k, &w_values, None, WeightFormat::F32)?;
        let w_plain = Tensor::from_f32(gpu, &[n, k], &w_values, DType::F32)?;
        rows.push(Row {
            name: format!("linear {pixels}x{k}x{n} f32"),
            gflop: 2.0 * (pixels * k * n) as f64 / 1e9,
            ours: time(gpu, opts.runs, || ops::linear(gpu, &x, &w))?,
            before: small_tiles(gpu, || time(gpu, opts.runs, || ops::linear(gpu, &x, &w)))?,
            plain: time(gpu, opts.runs, || naive::matmul(gpu, &x, &w_plain))?,
            f16: false,
            diff: difference(
                gpu,
                || ops::linear(gpu, &x, &w),
                || small_tiles(gpu, || ops::linear(gpu, &x, &w)),
            )?,
        });
    }

    // The UNet's first and deepest levels (few workgroups, long K: split on GPUs), and the VAE
    // decoder's upper levels (large enough for the 128x128 tile). before = the 64x64 tile
    // without a split, the only GEMM before those. The plain kernel only at the first shape.
    let vae_side = side * 4;
    let deep_side = side / 4;
    for (c, side, plain) in
        [(320, side, true), (1280, deep_side, false), (if opts.quick { 128 } else { 256 }, vae_side, false)]
    {
        let x = tensor(gpu, &mut rng, &[c, side, side], DType::F32)?;
        let x4 = x.reshape(&[1, c, side, side])?;
        let w_values = rng.vec(c * c * 9);
        let w = Weight::from_f32(gpu, c, c * 9, &w_values, None, WeightFormat::F32)?;
        let w_plain = Tensor::from_f32(gpu, &[c, c * 9], &w_values, DType::F32)?;
        let conv = || ops::conv2d(gpu, &x4, &w, Conv2d::same(3), None);
        rows.push(Row {
            name: format!("conv 3x3 {c}->{c} at {side}x{side} f32"),
            gflop: 2.0 * (side * side * c * c * 9) as f64 / 1e9,
            ours: time(gpu, opts.runs, conv)?,
            before: small_tiles(gpu, || time(gpu, opts.runs, conv))?,
            plain: if plain {
                time(gpu, opts.runs, || naive::conv2d(gpu, &x, &w_plain, 3, 1, 1))?
            } else {
                f64::NAN
            },
            f16: false,
            diff: difference(gpu, conv, || small_tiles(gpu, conv))?,
        });
    }

    // Attention at SD shapes: SD 1.5's first blocks (8 heads of 40), SD 2's (5 heads of 64),
    // the cross-attention over CLIP's 77 tokens, and the VAE's single 512-wide head (the
    // previous kernel took heads up to 160 and the VAE's went through a scores buffer).
    let cases = [
        ("self-attention", pixels, 8, 40),
        ("self-attention", pixels, 5, 64),
        ("cross-attention", 77, 8, 40),
        ("VAE attention", pixels, 1, 512),
    ];
    for &dtype in &dtypes {
        for (name, nk, heads, head_dim) in cases {
            let width = heads * head_dim;
            let q = tensor(gpu, &mut rng, &[1, pixels, width], dtype)?;
            let k = tensor(gpu, &mut rng, &[1, nk, width], dtype)?;
            let v = tensor(gpu, &mut rng, &[1, nk, width], dtype)?;
            let before = if head_dim <= ops::attention::ROWS_MAX_HEAD_DIM {
                time(gpu, opts.runs, || ops::attention_rows(gpu, &q, &k, &v, heads, false))?
            } else {
                f64::NAN
            };
            let plain = if dtype == DType::F32 && head_dim <= 160 {
                let flat = |t: &Tensor, n: usize| t.reshape(&[n, width]);
                let (q2, k2, v2) = (flat(&q, pixels)?, flat(&k, nk)?, flat(&v, nk)?);
                time(gpu, opts.runs, || naive::attention(gpu, &q2, &k2, &v2, heads))?
            } else {
                f64::NAN
            };
            let ours = || ops::attention(gpu, &q, &k, &v, heads, false);
            let diff = if before.is_finite() {
                difference(gpu, ours, || ops::attention_rows(gpu, &q, &k, &v, heads, false))?
            } else {
                f64::NAN
            };
            rows.push(Row {
                name: format!("{name} {pixels}x{nk}, {heads}x{head_dim} {}", label(dtype)),
                gflop: 4.0 * (pixels * nk * width) as f64 / 1e9,
                ours: time(gpu, opts.runs, || ops::attention(gpu, &q, &k, &v, heads, false))?,
                before,
                plain,
                f16: dtype == DType::F16,
                diff,
            });
        }
    }

    let caps = gpu.capabilities();
    println!("adapter: {} ({}, {})", caps.adapter_name, caps.backend, caps.device_type);
    println!(
        "median of {} runs after a warm-up; before = the kernel this one replaced (attention: the \
         row kernel; matmul, linear and conv: the 64x64 tile, K not split), plain = one invocation per output, all in \
         the same run; of peak = share of the matmul row of the same type\n",
        opts.runs
    );
    println!(
        "{:<46} {:>8} {:>9} {:>10} {:>10} {:>10} {:>9} {:>8} {:>9}",
        "kernel", "GFLOP", "ours ms", "ours GF/s", "before", "plain", "vs before", "of peak", "diff"
    );
    let rate = |gflop: f64, seconds: f64| {
        if seconds.is_finite() {
            format!("{:.2}", gflop / seconds)
        } else {
            "-".to_string()
        }
    };
    for r in &rows {
        let ours = r.gflop / r.ours;
        let speedup = if r.before.is_finite() { format!("{:.2}x", r.before / r.ours) } else { "-".into() };
        println!(
            "{:<46} {:>8.2} {:>9.1} {:>10.2} {:>10} {:>10} {:>9} {:>7.0}% {:>9}",
            r.name,
            r.gflop,
            r.ours * 1e3,
            ours,
            rate(r.gflop, r.before),
            rate(r.gflop, r.plain),
            speedup,
            100.0 * ours / peak[usize::from(r.f16)],
            if r.diff.is_finite() { format!("{:.1e}", r.diff) } else { "-".into() }
        );
    }
    let peak = gpu.pool_stats().peak_allocated_bytes;
    println!("\npeak pooled GPU memory: {:.1} MiB", peak as f64 / (1 << 20) as f64);
    Ok(())
}

/// The 15 costliest kernels of a profiled stage, with the stage's dispatch count.
fn print_profile(stage: &str, kernels: &[darkroom_gpu::KernelTime], wall: f64) {
    let total: f64 = kernels.iter().map(|k| k.seconds).sum();
    let dispatches: usize = kernels.iter().map(|k| k.dispatches).sum();
    println!(
        "{stage} by kernel (GPU timestamps; {dispatches} dispatches, {:.1} ms of kernel time, {:.1} ms wall):",
        total * 1e3,
        wall * 1e3
    );
    println!("{:<64} {:>6} {:>9} {:>6}", "kernel (shader:activations:defines:entry)", "calls", "ms", "share");
    for k in kernels.iter().take(15) {
        println!(
            "{:<64} {:>6} {:>9.2} {:>5.1}%",
            k.kernel,
            k.dispatches,
            k.seconds * 1e3,
            100.0 * k.seconds / total.max(1e-12)
        );
    }
}

/// Which architecture `bench models` builds (seeded weights at the real shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Architecture {
    /// SD-Turbo / SD 2.1: OpenCLIP ViT-H text encoder, 64-wide heads, linear projections;
    /// one UNet evaluation per step (no guidance).
    SdTurbo,
    /// SD 1.5: CLIP ViT-L, 8 heads, conv projections; two evaluations per step (CFG).
    Sd15,
    /// SDXL-Turbo: SDXL's UNet (2.6 B parameters), CLIP-L and OpenCLIP bigG, one evaluation per
    /// step (no guidance).
    SdxlTurbo,
    /// SDXL 1.0: the same network, two evaluations per step (CFG).
    Sdxl,
}

impl Architecture {
    fn is_sdxl(self) -> bool {
        matches!(self, Architecture::SdxlTurbo | Architecture::Sdxl)
    }

    /// What the shipped manifest stores weights as.
    pub fn shipped_weights(self) -> QuantPolicy {
        use darkroom_gpu::WeightFormat::{F16, Q4, Q8};
        if self.is_sdxl() {
            QuantPolicy { linear: Q4, conv: Q8 }
        } else {
            QuantPolicy { linear: Q8, conv: F16 }
        }
    }

    /// The image side the model is made for.
    pub fn native_size(self) -> usize {
        match self {
            Architecture::Sdxl => 1024,
            _ => 512,
        }
    }
}

pub struct ModelOptions {
    pub architecture: Architecture,
    /// Image side in pixels (the latents are an eighth of it).
    pub size: usize,
    pub activations: DType,
    pub weights: QuantPolicy,
    pub runs: usize,
    /// Also split one UNet step by kernel (timestamp queries).
    pub profile: bool,
    /// The VAE decode's tile side in latent pixels (None: the whole image).
    pub vae_tile: Option<usize>,
    /// Run each stage once, for its memory (no warm-up, no timing runs).
    pub memory: bool,
    /// Where the text encoders wait between prompts, as the generator keeps them.
    pub text_encoders: darkroom_pipeline::TextEncoders,
}

/// Bytes as MiB for the tables.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

pub fn models(gpu: &Gpu, opts: &ModelOptions) -> Result<(), ModelError> {
    let (clip_cfg, unet_cfg, batch, name) = match opts.architecture {
        Architecture::SdTurbo => (ClipTextConfig::sd21(), UNet2DConditionConfig::sd_turbo(), 1, "SD-Turbo"),
        Architecture::Sd15 => (ClipTextConfig::sd15(), UNet2DConditionConfig::sd15(), 2, "SD 1.5"),
        Architecture::SdxlTurbo => (ClipTextConfig::sd15(), UNet2DConditionConfig::sdxl(), 1, "SDXL-Turbo"),
        Architecture::Sdxl => (ClipTextConfig::sd15(), UNet2DConditionConfig::sdxl(), 2, "SDXL"),
    };
    let second_cfg = opts.architecture.is_sdxl().then(ClipTextConfig::sdxl_bigg);
    // `--memory`: each stage once.
    let time = |gpu: &Gpu, runs: usize, f: &mut dyn FnMut() -> Result<Tensor, ModelError>| {
        if opts.memory {
            let start = Instant::now();
            drop(f()?);
            gpu.finish()?;
            Ok::<f64, ModelError>(start.elapsed().as_secs_f64())
        } else {
            time(gpu, runs, f)
        }
    };
    let vae_cfg = AutoencoderKLConfig::sd();
    let multiple = vae_cfg.scale();
    if opts.size == 0 || opts.size % multiple != 0 {
        return Err(ModelError::Input(format!("--size must be a multiple of {multiple} for {name}")));
    }
    let latent = opts.size / vae_cfg.scale();
    let (dtype, policy) = (opts.activations, opts.weights);

    // Seeded weights at the real shapes, every component the generator loads, in its order:
    // the text encoders first (kept on the host between prompts under
    // `TextEncoders::Host`, so on the GPU only while encoding), then the UNet and the VAE.
    let start = Instant::now();
    let store = WeightStore::random(7);
    let on_gpu = || gpu.weight_bytes() + gpu.pool_stats().allocated_bytes;
    let before_text = on_gpu();
    // Text encoders stay int8 under a 4-bit policy, as the pipeline loads them.
    let text_root = store.root(gpu, dtype, policy.for_text_encoder());
    let clip = ClipTextModel::load(&text_root, &clip_cfg)?;
    let second = match &second_cfg {
        Some(cfg) => Some(ClipTextModel::load(&text_root.pp("second"), cfg)?),
        None => None,
    };
    gpu.finish()?;
    let text_weights = on_gpu() - before_text;
    let mut built = start.elapsed().as_secs_f64();

    // Each stage starts from a trimmed pool, as the pipeline does; its peak is measured alone.
    let stage_start = || {
        gpu.trim_pool();
        gpu.reset_pool_peak();
        gpu.pool_stats().allocated_bytes
    };
    let stage_peak = |start: u64| gpu.pool_stats().peak_allocated_bytes - start;
    let mut rng = TestRng::new(3);
    let ids: Vec<u32> =
        (0..batch * 77).map(|i| if i % 77 == 0 { 49406 } else { 320 + (i as u32 % 900) }).collect();
    // `--memory`: the stages are recorded, not run (the pool allocates the same either way:
    // allocations follow shapes, not values), so the large architectures take minutes, not
    // hours, on a software adapter.
    gpu.set_record_only(opts.memory);
    let held = stage_start();
    let encode = time(gpu, opts.runs, &mut || match &second {
        // SDXL: both encoders' penultimate states, the second's pooled projection.
        Some(second) => {
            let a = pollster::block_on(clip.forward_sdxl(gpu, &ids, 77, false, &[]))?;
            let b = pollster::block_on(second.forward_sdxl(gpu, &ids, 77, true, &[]))?;
            drop(a);
            Ok(b.penultimate)
        }
        None => clip.forward(gpu, &ids, 77),
    })?;
    let context = match &second_cfg {
        Some(cfg) => {
            let width = clip_cfg.hidden_size + cfg.hidden_size;
            Tensor::from_f32(gpu, &[batch, 77, width], &rng.vec(batch * 77 * width), dtype)?
        }
        None => clip.forward(gpu, &ids, 77)?,
    };
    gpu.finish()?;
    let encode_peak = stage_peak(held);
    let text_on_host = opts.text_encoders == darkroom_pipeline::TextEncoders::Host;
    // Kept on the host, the encoders leave the GPU before the UNet runs.
    let text_models = (clip, second);
    if text_on_host {
        drop(text_models);
        gpu.trim_pool();
    }

    gpu.set_record_only(false);
    let start = Instant::now();
    let root = store.root(gpu, dtype, policy);
    let unet = UNet2DConditionModel::load(&root, &unet_cfg)?;
    // As the pipeline runs it: SDXL's VAE (force_upcast) in f32.
    let vae_dtype = darkroom_pipeline::model::vae_dtype(opts.architecture.is_sdxl(), &vae_cfg, dtype);
    let vae_root = store.root(gpu, vae_dtype, policy);
    // The VAE encoder waits on the host (uploaded only to encode an init image), as the
    // pipeline keeps it: not part of txt2img's memory.
    let decoder = VaeDecoder::load(&vae_root, &vae_cfg)?;
    gpu.finish()?;
    built += start.elapsed().as_secs_f64();
    gpu.set_record_only(opts.memory);
    // What stays on the GPU between prompts.
    gpu.trim_pool();
    let weights = on_gpu() - before_text;

    let sample =
        Tensor::from_f32(gpu, &[batch, 4, latent, latent], &rng.vec(batch * 4 * latent * latent), dtype)?;
    let timesteps = vec![999.0; batch];
    let pooled = match unet_cfg.text_time() {
        Some((width, _)) => Some(Tensor::from_f32(gpu, &[batch, width], &rng.vec(batch * width), dtype)?),
        None => None,
    };
    let size = opts.size as f32;
    let time_ids = [size, size, 0.0, 0.0, size, size].repeat(batch);
    let input = darkroom_models::unet::UNetInput {
        sample: &sample,
        timesteps: &timesteps,
        context: &context,
        control: None,
        added: pooled
            .as_ref()
            .map(|text_embeds| darkroom_models::unet::AddedConditions { text_embeds, time_ids: &time_ids }),
    };
    let held = stage_start();
    let step = time(gpu, opts.runs, &mut || unet.forward_input(gpu, &input))?;
    let step_peak = stage_peak(held);
    let latents = Tensor::from_f32(gpu, &[1, 4, latent, latent], &rng.vec(4 * latent * latent), vae_dtype)?;
    let held = stage_start();
    // Without --vae-tile, the tile `generate --vae-tiling auto` would pick.
    let whole_fits =
        darkroom_pipeline::generate::whole_decode_bytes(&vae_cfg, vae_dtype, opts.size, opts.size)
            <= gpu.capabilities().max_storage_buffer_binding_size;
    let vae_tile = opts.vae_tile.or_else(|| {
        darkroom_pipeline::VaeTiling::Auto.tile_for(opts.size, opts.size, vae_dtype.size_bytes(), whole_fits)
    });
    let run_decode = || match vae_tile {
        Some(t) => decoder.forward_tiled(gpu, &latents, t),
        None => decoder.forward(gpu, &latents),
    };
    let decode = time(gpu, opts.runs, &mut || Ok(run_decode()?))?;
    let decode_peak = stage_peak(held);
    // The text stage holds the encoders on top of what stays resident (a new prompt is
    // encoded with the UNet and the VAE loaded); the other stages hold what stays resident.
    let encode_total = weights + if text_on_host { text_weights } else { 0 } + encode_peak;
    let peak = encode_total.max(weights + step_peak).max(weights + decode_peak);

    let caps = gpu.capabilities();
    println!("adapter: {} ({}, {})", caps.adapter_name, caps.backend, caps.device_type);
    println!(
        "{name} architecture, seeded weights ({:.1} s to build); {}x{} px, activations {dtype:?} \
         (VAE {vae_dtype:?}), weights {:?} (linear) / {:?} (conv), text encoders {:?} kept on the {}; {}\n",
        built,
        opts.size,
        opts.size,
        policy.linear,
        policy.conv,
        policy.for_text_encoder().linear,
        if text_on_host { "host" } else { "GPU" },
        if opts.memory {
            "each stage recorded once, not run (--memory)".to_string()
        } else {
            format!("median of {} runs after a warm-up", opts.runs)
        }
    );
    gpu.set_record_only(false);
    let time_header = if opts.memory { "ms to record" } else { "ms" };
    println!("{:<48} {:>12} {:>16}", "stage", time_header, "activations MiB");
    let rows = [
        (format!("text encode (batch {batch}, 77 tokens)"), encode, encode_peak),
        (format!("UNet step (batch {batch}, {latent}x{latent} latents)"), step, step_peak),
        (
            match vae_tile {
                Some(t) => format!("VAE decode ({0}x{0} px, tiles {1}x{1})", opts.size, t * multiple),
                None => format!("VAE decode ({0}x{0} px, whole)", opts.size),
            },
            decode,
            decode_peak,
        ),
    ];
    for (stage, seconds, peak) in rows {
        println!("{stage:<48} {:>12.1} {:>16.1}", seconds * 1e3, mib(peak));
    }
    println!();
    println!("text encoders' weights:                    {:>9.1} MiB", mib(text_weights));
    println!(
        "weights on the GPU between prompts:        {:>9.1} MiB{}",
        mib(weights),
        if text_on_host { " (text encoders on the host)" } else { " (every component)" }
    );
    println!("text stage (weights + encoders + work):    {:>9.1} MiB", mib(encode_total));
    println!("peak GPU memory (largest stage):           {:>9.1} MiB", mib(peak));

    if opts.profile {
        println!();
        if !gpu.begin_profile() {
            println!("per-kernel split: this adapter has no timestamp queries");
            return Ok(());
        }
        drop(unet.forward_input(gpu, &input)?);
        let kernels = pollster::block_on(gpu.end_profile())?;
        print_profile("one UNet step", &kernels, step);
        gpu.begin_profile();
        drop(run_decode()?);
        let kernels = pollster::block_on(gpu.end_profile())?;
        println!();
        print_profile("one VAE decode", &kernels, decode);
    }
    Ok(())
}
