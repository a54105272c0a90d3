//! `darkroom upscale --model <file|id> --in IMG --out PNG [--tile N]`: an ESRGAN-family model
//! (RRDBNet, SRVGGNetCompact; `.pth` or `.safetensors`) over an image, in tiles when it is large.

use std::io::Write;
use std::path::{Path, PathBuf};

use darkroom_gpu::{DType, Gpu};
use darkroom_models::upscale::{weights_file, Upscaler, UpscalerInfo};
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_pipeline::PipelineError;

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
    let bad = |e: darkroom_models::ModelError| usage(format!("{}: {e}", path.display()));
    let store = WeightStore::from_bytes(weights_file(bytes).map_err(bad)?).map_err(bad)?;
    let info = UpscalerInfo::detect(store.header()).map_err(bad)?;
    let policy = if dtype == DType::F16 { QuantPolicy::F16 } else { QuantPolicy::F32 };
    let model = Upscaler::load(&store.root(gpu, dtype, policy), info).map_err(bad)?;
    store.require_all_used().map_err(bad)?;
    Ok(model)
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
            eprint!("\rupscaling x{}: tile {done}/{total}   ", info.scale);
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
    let png = darkroom_pipeline::metadata::encode_png_plain(&out.rgba, out.width as u32, out.height as u32)
        .map_err(PipelineError::from)?;
    crate::generate::write_atomically(&args.out, &png)?;
    println!("{}", args.out.display());
    Ok(())
}
