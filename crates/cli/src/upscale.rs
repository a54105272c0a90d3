//! `darkroom upscale --model <file|id> --in IMG --out PNG [--tile N]`: an ESRGAN-family model
//! (RRDBNet, SRVGGNetCompact; `.pth` or `.safetensors`) over an image, in tiles when it is large.

use std::io::Write;
use std::path::{Path, PathBuf};

use darkroom_gpu::{DType, Gpu};
use darkroom_models::upscale::Upscaler;

use crate::failure::{usage, Failure};
use crate::generate::{activations, PrecisionArg};

#[derive(clap::Args)]
pub struct UpscaleArgs {
    /// An upscaler's weights (`.pth` from torch.save, or `.safetensors`): Real-ESRGAN x4plus,
    /// realesr-general-x4v3, ESRGAN-family community models; or a downloaded id.
    #[arg(long)]
    pub model: PathBuf,
    /// The image to upscale (PNG).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// The upscaled image (PNG).
    #[arg(long)]
    pub out: PathBuf,
    /// Tile side in input pixels (overlapping tiles, feathered seams); default 256.
    #[arg(long, value_parser = clap::value_parser!(u64).range(8..=4096))]
    pub tile: Option<u64>,
    /// Activations: f32, f16 (needs shader-f16); auto picks f16 when the adapter has it.
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: PrecisionArg,
    /// No progress on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// The weights file a `--model` names: a file, or the one weights file of a downloaded id.
fn weights_path(model: &Path) -> Result<PathBuf, Failure> {
    if model.is_file() {
        return Ok(model.to_path_buf());
    }
    let looks_like_id = model.to_str().is_some_and(|s| !s.contains(['/', '\\']) && !s.starts_with('.'));
    if !looks_like_id {
        return Err(usage(format!("--model: {} does not exist", model.display())));
    }
    let folder = crate::models::resolve(&model.to_string_lossy(), None)?;
    std::fs::read_dir(&folder)
        .map_err(|e| usage(format!("cannot read {}: {e}", folder.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "pth" || x == "safetensors"))
        .ok_or_else(|| usage(format!("{} holds no .pth or .safetensors file", folder.display())))
}

/// An upscaler model from a file or a downloaded id, with `dtype` activations.
pub fn load(gpu: &Gpu, model: &Path, dtype: DType) -> Result<Upscaler, Failure> {
    let path = weights_path(model)?;
    let bytes = std::fs::read(&path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    darkroom_pipeline::upscale::load_upscaler(gpu, bytes, dtype)
        .map_err(|e| usage(format!("{}: {e}", path.display())))
}

/// The name an upscaled image records for `--model` (A1111 records the upscaler's name).
fn upscaler_name(model: &Path) -> String {
    model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| model.display().to_string())
}

pub fn run(gpu: &Gpu, args: UpscaleArgs) -> Result<(), Failure> {
    let precision = darkroom_engine::policy::precision(
        gpu.capabilities().shader_f16,
        activations(args.precision),
        darkroom_engine::policy::Weights::AsStored,
    )?;
    let dtype = precision.activations;
    let model = load(gpu, &args.model, dtype)?;
    let info = model.info;
    let image = crate::generate::read_png(&args.input, "image")?;
    let quiet = args.quiet;
    let mut progress = |done: usize, total: usize| {
        if !quiet {
            crate::progress!("\rupscaling x{}: tile {done}/{total}   ", info.scale);
            let _ = std::io::stderr().flush();
        }
        true
    };
    let tile = args.tile.map(|t| t as usize);
    let out = pollster::block_on(darkroom_pipeline::upscale::upscale(
        gpu,
        &model,
        dtype,
        &image,
        tile,
        &mut progress,
    ))?;
    if !quiet {
        eprintln!();
    }
    // The source's parameters travel on, with the upscale added as A1111's Extras writes it.
    let source = std::fs::read(&args.input).ok();
    let png = darkroom_pipeline::upscale::upscaled_png(
        &out,
        source.as_deref(),
        info.scale,
        &upscaler_name(&args.model),
    )?;
    crate::generate::write_atomically(&args.out, &png)?;
    println!("{}", args.out.display());
    Ok(())
}
