//! `darkroom`: Darkroom's engine on the command line, over wgpu (Vulkan, Metal, DX12).

use std::process::ExitCode;

mod batch;
mod bench;
mod brief;
mod control;
mod embeddings;
mod failure;
mod finish;
mod generate;
mod grid;
mod models;
mod prompts;
mod score;
mod upscale;

use clap::{Parser, Subcommand};
use darkroom_engine::policy::Weights;
use darkroom_gpu::{selftest, Gpu, Requirements, WeightFormat};
use darkroom_models::QuantPolicy;

#[derive(Parser)]
#[command(name = "darkroom", version, about = "Private Stable Diffusion on your own GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make images: txt2img, img2img (--init) and inpainting (--init --mask) to PNGs with A1111
    /// metadata.
    Generate(Box<generate::GenerateArgs>),
    /// Finish drafts (`generate --draft`): the full VAE decodes the latents each draft PNG
    /// carries, then the hires pass if its recipe has one — no sampling again.
    Finish(finish::FinishArgs),
    /// Model manifests and the download cache: list, fetch, rm.
    Models(models::ModelsArgs),
    /// Run a prompts file (A1111's "prompts from file" lines or JSON-lines recipes) over the
    /// generate flags into a folder; resumable, and shardable over machines (--shard K/N).
    Batch(Box<batch::BatchArgs>),
    /// A1111's X/Y/Z plot: every combination of up to three axes' values (steps, cfg, sampler,
    /// prompt S/R, seed, size, …) as cells and a labelled DIR/grid.png.
    Grid(Box<grid::GridArgs>),
    /// Write a control map alone: the preprocessor a `--control` unit would run (canny,
    /// lineart, scribble, depth, tile, none) on an image.
    Preprocess(control::PreprocessArgs),
    /// Upscale an image with an ESRGAN-family model (RRDBNet, SRVGGNetCompact; .pth or
    /// .safetensors), in tiles when it is large.
    Upscale(upscale::UpscaleArgs),
    /// Score images: one JSON line each with the CLIP score against --prompt (with --clip, a
    /// CLIPModel folder), the aesthetic score, sharpness, clipped highlights/shadows, the
    /// distance to --palette and near-duplicates.
    Score(score::ScoreArgs),
    /// Briefs as files: `export` a case study (--html page, --sheet PNG) of a brief the app
    /// exported; `new`, `add` (images as an iteration, scored), `mark` (cull), `show`.
    Brief(brief::BriefArgs),
    /// Print a dynamic prompt template's prompts, one a line: random (--count, --seed) or every
    /// combination (--combinatorial, --max).
    Prompts(prompts::PromptsArgs),
    /// Print the generation parameters stored in a PNG (A1111's `parameters` chunk).
    Params {
        /// A PNG written by Darkroom, A1111, or anything that writes that chunk.
        png: std::path::PathBuf,
    },
    /// Show the GPU adapter darkroom would use and what it can do.
    Info,
    /// Run a matmul kernel on the GPU and check it against the CPU.
    Selftest {
        /// Matrix sizes as MxKxN.
        #[arg(long, default_value = "67x45x53", value_parser = parse_shape)]
        shape: (usize, usize, usize),
        #[arg(long, default_value_t = selftest::MATMUL_SEED)]
        seed: u32,
    },
    /// Measure speed. `kernels`: GFLOP/s at UNet shapes beside plain kernels and the adapter's
    /// practical peak, same run. `models`: text encode / UNet step / VAE decode times and GPU
    /// memory of a real architecture with seeded weights.
    Bench {
        #[arg(value_enum)]
        what: BenchTarget,
        /// Quarter-size shapes (software adapters are slow).
        #[arg(long)]
        quick: bool,
        /// Timed runs per kernel or stage (the median is shown).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// `models`: which architecture.
        #[arg(long, value_enum, default_value = "sd-turbo")]
        model: bench::Architecture,
        /// `models`: image side in pixels (the model's: 512, SDXL's 1024; --quick: 128).
        #[arg(long)]
        size: Option<usize>,
        /// `models`: activations f32 or f16 (f16 needs shader-f16; auto picks it when present).
        #[arg(long, value_enum, default_value = "auto")]
        precision: generate::PrecisionArg,
        /// `models`: weight storage for matmuls and convolutions (default: the shipped
        /// manifests' policy: int8 linear and f16 conv for SD, 4-bit linear and int8 conv for SDXL).
        #[arg(long, value_enum, default_value = "shipped")]
        weights: WeightsArg,
        /// `models`: also split one UNet step by kernel (GPU timestamp queries).
        #[arg(long)]
        profile: bool,
        /// `models`: decode in tiles of N latent pixels (8 image pixels each); default: as
        /// `generate --vae-tiling auto` decides for the size.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
        vae_tile: Option<u64>,
        /// `models`: run each stage once and report its GPU memory (no warm-up or timing runs:
        /// for the large architectures on slow adapters).
        #[arg(long)]
        memory: bool,
        /// `models`: where the text encoders wait between prompts, as `generate --text-encoders`
        /// (auto: the GPU on a discrete GPU, the host elsewhere).
        #[arg(long, value_enum, default_value = "auto")]
        text_encoders: generate::TextEncodersArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchTarget {
    Kernels,
    Models,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WeightsArg {
    Shipped,
    F32,
    F16,
    Q8,
    Q4,
}

fn parse_shape(s: &str) -> Result<(usize, usize, usize), String> {
    let dims: Vec<usize> = s
        .split('x')
        .map(|d| d.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("expected MxKxN such as 64x32x16, got {s:?}"))?;
    match dims[..] {
        [m, k, n] if m > 0 && k > 0 && n > 0 => Ok((m, k, n)),
        _ => Err(format!("expected three positive sizes MxKxN, got {s:?}")),
    }
}

fn params(path: &std::path::Path) -> ExitCode {
    use darkroom_pipeline::metadata::{read_parameters, GenerationParams};
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    match read_parameters(&bytes) {
        Ok(text) => {
            println!("{text}");
            if let Err(e) = GenerationParams::parse_infotext(&text) {
                eprintln!("note: {e}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

/// Whether a progress line (rewritten in place with `\r`) is open on stderr: a message
/// printed after it starts on a line of its own.
pub static PROGRESS_OPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Rewrites the progress line on stderr (`eprint!` of a text starting with `\r`).
#[macro_export]
macro_rules! progress {
    ($($t:tt)*) => {{
        $crate::PROGRESS_OPEN.store(true, std::sync::atomic::Ordering::Relaxed);
        eprint!($($t)*);
    }};
}

/// Ends the progress line with a last text.
#[macro_export]
macro_rules! progress_done {
    ($($t:tt)*) => {{
        $crate::PROGRESS_OPEN.store(false, std::sync::atomic::Ordering::Relaxed);
        eprintln!($($t)*);
    }};
}

/// Ends an open progress line, so that what follows starts on its own line.
fn close_progress() {
    if PROGRESS_OPEN.swap(false, std::sync::atomic::Ordering::Relaxed) {
        eprintln!();
    }
}

/// Exit code 2 for what the user can fix, 1 for the rest.
fn report(result: Result<(), failure::Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            close_progress();
            eprintln!("error: {}", f.message);
            ExitCode::from(if f.usage { 2 } else { 1 })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // These need no GPU.
    let cli = match cli.command {
        Command::Params { png } => return params(&png),
        Command::Models(args) => return report(models::run(args)),
        Command::Prompts(args) => return report(prompts::run(args)),
        Command::Brief(args) => return report(brief::run(args)),
        Command::Preprocess(args) => return report(control::run_preprocess(args)),
        command => Cli { command },
    };
    let gpu = match pollster::block_on(Gpu::open(&Requirements::default())) {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Params { png } => params(&png),
        Command::Models(args) => report(models::run(args)),
        Command::Prompts(args) => report(prompts::run(args)),
        Command::Brief(args) => report(brief::run(args)),
        Command::Preprocess(args) => report(control::run_preprocess(args)),
        Command::Generate(args) => report(generate::run(&gpu, *args)),
        Command::Finish(args) => report(finish::run(&gpu, args)),
        Command::Batch(args) => report(batch::run(&gpu, *args)),
        Command::Grid(args) => report(grid::run(&gpu, *args)),
        Command::Upscale(args) => report(upscale::run(&gpu, args)),
        Command::Score(args) => report(score::run(&gpu, args)),
        Command::Bench { what: BenchTarget::Kernels, quick, runs, .. } => {
            match bench::kernels(&gpu, &bench::Options { quick, runs }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench {
            what: BenchTarget::Models,
            quick,
            runs,
            model,
            size,
            precision,
            weights,
            profile,
            vae_tile,
            memory,
            text_encoders,
        } => {
            let asked = generate::activations(precision);
            let shader_f16 = gpu.capabilities().shader_f16;
            let activations = match darkroom_engine::policy::precision(shader_f16, asked, Weights::AsStored) {
                Ok(p) => p.activations,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let format = |f| QuantPolicy { linear: f, conv: f };
            let weights = match weights {
                WeightsArg::Shipped => model.shipped_weights(),
                WeightsArg::F32 => format(WeightFormat::F32),
                WeightsArg::F16 => format(WeightFormat::F16),
                WeightsArg::Q8 => format(WeightFormat::Q8),
                WeightsArg::Q4 => format(WeightFormat::Q4),
            };
            let opts = bench::ModelOptions {
                architecture: model,
                size: size.unwrap_or(if quick { 128 } else { model.native_size() }),
                activations,
                weights,
                runs,
                profile,
                vae_tile: vae_tile.map(|t| t as usize),
                memory,
                text_encoders: text_encoders.on(&gpu.capabilities().device_type),
            };
            match bench::models(&gpu, &opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Info => {
            let c = gpu.capabilities();
            println!("adapter: {}", c.adapter_name);
            println!("backend: {}", c.backend);
            println!("device type: {}", c.device_type);
            println!("driver: {}", c.driver);
            println!("shader-f16: {}", if c.shader_f16 { "yes" } else { "no" });
            println!("subgroups: {}", if c.subgroups { "yes" } else { "no" });
            println!("maxBufferSize: {}", c.max_buffer_size);
            println!("maxStorageBufferBindingSize: {}", c.max_storage_buffer_binding_size);
            println!("maxComputeWorkgroupStorageSize: {}", c.max_compute_workgroup_storage_size);
            println!("maxComputeInvocationsPerWorkgroup: {}", c.max_compute_invocations_per_workgroup);
            ExitCode::SUCCESS
        }
        Command::Selftest { shape: (m, k, n), seed } => {
            match pollster::block_on(selftest::matmul_check(&gpu, m, k, n, seed)) {
                Ok(r) if r.passed => {
                    println!(
                        "pass: {m}x{k} · {k}x{n} matmul matches the CPU (max abs error {:.2e})",
                        r.max_abs_err
                    );
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    eprintln!(
                        "FAIL: {m}x{k} · {k}x{n} matmul differs from the CPU by up to {:.3e}",
                        r.max_abs_err
                    );
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
