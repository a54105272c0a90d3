//! `darkroom finish DRAFT.png…`: drafts made with `--draft` finished by the full VAE from the
//! latents they carry (and the hires pass when their recipe has one), without sampling again.

use std::path::{Path, PathBuf};

use darkroom_gpu::Gpu;
use darkroom_pipeline::draft::Kept;

use crate::failure::{usage, Failure};
use crate::generate::{write_atomically, PrecisionArg, Quant, Runner, Settings};

#[derive(clap::Args)]
pub struct FinishArgs {
    /// Draft PNGs made with `darkroom generate --draft` (or the app's drafts).
    #[arg(required = true)]
    pub drafts: Vec<PathBuf>,
    /// A folder for the finished images (default: beside each draft). Each is named after its
    /// draft with `-final` added.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The model to decode with, when the one that made the drafts has moved (an id or a
    /// diffusers folder; default: the drafts' own).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where `<lora:name:scale>` tags find their files for a hires pass (default: the cache's).
    #[arg(long)]
    pub lora_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "none")]
    pub quant: Quant,
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: PrecisionArg,
    /// VAE decode: auto, off, or a tile side in latent pixels (as `generate`'s).
    #[arg(long, value_parser = crate::generate::parse_vae_tiling, default_value = "auto", value_name = "auto|off|N")]
    pub vae_tiling: darkroom_pipeline::VaeTiling,
    #[arg(long)]
    pub quiet: bool,
}

/// `draft` → `out/<stem>-final.png` (or beside the draft).
fn final_path(draft: &Path, out: Option<&Path>) -> PathBuf {
    let stem = draft.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "draft".into());
    let dir = match out {
        Some(dir) => dir.to_path_buf(),
        None => draft.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    dir.join(format!("{stem}-final.png"))
}

pub fn run(gpu: &Gpu, args: FinishArgs) -> Result<(), Failure> {
    // Every draft read and checked before any model loads.
    let mut drafts = Vec::new();
    for path in &args.drafts {
        let bytes = std::fs::read(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        match Kept::from_png(&bytes) {
            Ok(Some(kept)) => drafts.push((path, kept)),
            Ok(None) => {
                return Err(usage(format!(
                    "{} is not a draft (it carries no latents): make drafts with `darkroom generate --draft`",
                    path.display()
                )))
            }
            Err(e) => return Err(usage(format!("{}: {e}", path.display()))),
        }
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    let first_model = args.model.clone().unwrap_or_else(|| PathBuf::from(&drafts[0].1.recipe.model));
    let mut settings = Settings::for_model(first_model);
    settings.lora_dir = args.lora_dir.clone();
    settings.quant = args.quant;
    settings.precision = args.precision;
    settings.vae_tiling = args.vae_tiling;
    settings.quiet = args.quiet;
    let mut runner = Runner::new(gpu, settings)?;
    let n = drafts.len();
    for (i, (path, kept)) in drafts.iter().enumerate() {
        runner.settings.model = args.model.clone().unwrap_or_else(|| PathBuf::from(&kept.recipe.model));
        let label = if n > 1 { format!("draft {}/{n}: ", i + 1) } else { String::new() };
        let made = runner.finish(kept, &label)?;
        for (j, image) in made.iter().enumerate() {
            let mut target = final_path(path, args.out.as_deref());
            if j > 0 {
                target.set_file_name(format!(
                    "{}-{}.png",
                    target.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
                    j + 1
                ));
            }
            write_atomically(&target, &image.to_png()?)?;
            println!("{}", target.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_images_are_named_after_their_drafts() {
        assert_eq!(final_path(Path::new("a/42.png"), None), PathBuf::from("a/42-final.png"));
        assert_eq!(
            final_path(Path::new("a/42.png"), Some(Path::new("keep"))),
            PathBuf::from("keep/42-final.png")
        );
    }
}
