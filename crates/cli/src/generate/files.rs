//! What `darkroom generate` reads and writes: PNGs in and out, LoRA files, models by id or
//! folder (loaded through the model cache), wildcards, styles and presets.

use std::io::Write;
use std::path::{Path, PathBuf};

use darkroom_engine::{EngineError, LoraSource, ModelCache, ModelKey};
use darkroom_pipeline::preset::Preset;
use darkroom_workflow::{Styles, Wildcards};

use super::settings::Settings;
use crate::failure::{usage, Failure};
use darkroom_gpu::Gpu;
use darkroom_pipeline::{
    short_hash, Folder, FolderQuantCache, Image, PipelineError, Recipe, StableDiffusion,
};

pub fn read_png(path: &Path, what: &str) -> Result<Image, Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| usage(format!("cannot read the {what} {}: {e}", path.display())))?;
    Image::from_png(&bytes).map_err(|e| usage(format!("the {what} {}: {e}", path.display())))
}

/// `--out x.png` names a file; anything else, a folder.
pub(super) fn names_a_png(out: &Path) -> bool {
    out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// Where image `index` of `count` goes.
pub(super) fn output_path(out: &Path, seed: u64, index: usize, count: usize) -> PathBuf {
    if !names_a_png(out) {
        return out.join(format!("{seed}.png"));
    }
    if count == 1 {
        return out.to_path_buf();
    }
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!("{stem}-{}.png", index + 1))
}

/// LoRAs from `--lora FILE[:SCALE]` files (named by their file stem) and, for other prompt tags,
/// `name.safetensors` in the LoRA folder.
pub(super) struct FileLoras {
    files: Vec<(String, PathBuf)>,
    dir: PathBuf,
}

impl FileLoras {
    fn path(&self, name: &str) -> PathBuf {
        match self.files.iter().find(|(n, _)| n == name) {
            Some((_, path)) => path.clone(),
            None => self.dir.join(format!("{name}.safetensors")),
        }
    }
}

impl LoraSource for FileLoras {
    async fn identity(&self, name: &str) -> Result<Option<String>, EngineError> {
        Ok(self.read(name).await?.map(|bytes| short_hash(&bytes)))
    }

    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let path = self.path(name);
        if !path.is_file() {
            return Ok(None);
        }
        std::fs::read(&path)
            .map(Some)
            .map_err(|e| EngineError::input(format!("cannot read LoRA {}: {e}", path.display())))
    }

    fn missing(&self, name: &str) -> String {
        format!(
            "the prompt asks for LoRA `{name}`, but {} does not exist (give --lora-dir DIR, or --lora FILE)",
            self.path(name).display()
        )
    }

    async fn identity_of(&self, _name: &str, bytes: &[u8]) -> Result<Option<String>, EngineError> {
        Ok(Some(short_hash(bytes)))
    }
}

/// `--lora FILE[:SCALE]` flags as prompt tags (so the PNG records them), and where every tag's
/// file is.
pub(super) fn lora_files(settings: &Settings) -> (FileLoras, String) {
    let dir = settings
        .lora_dir
        .clone()
        .unwrap_or_else(|| darkroom_weights::native::default_cache_dir().join("loras"));
    let mut files = Vec::new();
    let mut tags = String::new();
    for spec in &settings.loras {
        let (path, scale) = match spec.rsplit_once(':').and_then(|(p, s)| Some((p, s.parse::<f32>().ok()?))) {
            Some((path, scale)) => (PathBuf::from(path), scale),
            None => (PathBuf::from(spec), 1.0),
        };
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        tags.push_str(&format!(" <lora:{name}:{scale}>"));
        files.push((name, path));
    }
    (FileLoras { files, dir }, tags)
}

fn model_folder(model: &Path) -> Result<PathBuf, Failure> {
    let looks_like_id = model.to_str().is_some_and(|s| !s.contains(['/', '\\']) && !s.starts_with('.'));
    let folder = if !model.exists() && looks_like_id {
        crate::models::resolve(&model.to_string_lossy(), None)?
    } else {
        model.to_path_buf()
    };
    if !folder.join("model_index.json").is_file() && !folder.join("unet").is_dir() {
        return Err(usage(format!(
            "{} is not a diffusers folder (no model_index.json or unet/)",
            folder.display()
        )));
    }
    Ok(folder)
}

/// The wildcard files of `--wildcards DIR`.
pub fn read_wildcards(dir: &Path) -> Result<Wildcards, Failure> {
    if !dir.is_dir() {
        return Err(usage(format!("--wildcards: {} is not a folder", dir.display())));
    }
    let cards = Wildcards::from_dir(dir)
        .map_err(|e| usage(format!("--wildcards: cannot read {}: {e}", dir.display())))?;
    for (file, why) in &cards.unreadable {
        eprintln!("warning: wildcard file {file} is left out: {why}");
    }
    Ok(cards)
}

/// The styles file: --styles, else styles.csv in the cache folder when there is one.
pub(super) fn load_styles(settings: &Settings) -> Result<Styles, Failure> {
    let (path, given) = match &settings.styles_file {
        Some(path) => (path.clone(), true),
        None => (darkroom_weights::native::default_cache_dir().join("styles.csv"), false),
    };
    if !path.is_file() {
        if given {
            return Err(usage(format!("--styles: {} does not exist", path.display())));
        }
        return Ok(Styles::default());
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| usage(format!("--styles: cannot read {}: {e}", path.display())))?;
    Styles::parse_csv(&text).map_err(|e| usage(format!("--styles {}: {e}", path.display())))
}

/// The brand preset file of --preset.
pub(super) fn load_preset(path: &Path) -> Result<Preset, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("--preset: cannot read {}: {e}", path.display())))?;
    Preset::parse(&text).map_err(|e| usage(format!("--preset {}: {e}", path.display())))
}

/// The recipe's model (its LoRAs merged), loaded or from the cache; its settings checked
/// against the model's configs first.
pub(super) fn load_model(
    loaded: &mut ModelCache<(StableDiffusion, String)>,
    gpu: &Gpu,
    settings: &Settings,
    precision: darkroom_pipeline::Precision,
    recipe: &Recipe,
) -> Result<std::rc::Rc<(StableDiffusion, String)>, Failure> {
    let quiet = settings.quiet;
    let folder = model_folder(Path::new(&recipe.model))?;
    let (lora_source, _) = lora_files(settings);
    let name = folder
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| folder.display().to_string());
    let files = Folder(folder.clone());
    // Every setting checked against the model's configs before its weights load.
    recipe
        .validate(&pollster::block_on(StableDiffusion::inspect(&files, &name))?)
        .map_err(PipelineError::from)?;
    let lora_key = pollster::block_on(darkroom_engine::loras::key(&lora_source, &recipe.loras()))?;
    let key = ModelKey::new(&name, &folder.display().to_string(), &precision, &lora_key);
    let model = match loaded.get(&key) {
        Some(model) => model,
        None => {
            loaded.evict();
            let loras = pollster::block_on(darkroom_engine::loras::resolve(&lora_source, &recipe.loras()))?;
            if !quiet {
                eprintln!("loading {name} …");
            }
            let started = std::time::Instant::now();
            // Quantized weights are cached beside the downloads, so a second run skips quantizing.
            let cache = FolderQuantCache(darkroom_weights::native::default_cache_dir().join("quantized"));
            let mut loading = |path: &str, done: u64, total: u64| {
                if !quiet {
                    crate::progress!("\rloading {path} {:.0}%   ", 100.0 * done as f64 / total.max(1) as f64);
                    let _ = std::io::stderr().flush();
                }
            };
            let model = pollster::block_on(StableDiffusion::load_with_loras(
                gpu,
                &files,
                &cache,
                &name,
                precision,
                &loras,
                &mut loading,
            ))?;

            if !quiet {
                crate::progress_done!("\rloaded in {:.1} s                ", started.elapsed().as_secs_f64());
            }
            loaded.insert(key, (model, name.clone()), 0)
        }
    };
    Ok(model)
}

/// Writes `bytes` to `path` through a temporary file beside it, so an interrupted write never
/// leaves a partial image under the final name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let part = path.with_extension("png.part");
    let fail = |e: std::io::Error| Failure {
        message: format!("cannot write {}: {e}", path.display()),
        usage: false,
    };
    std::fs::write(&part, bytes).map_err(fail)?;
    std::fs::rename(&part, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_outputs_are_numbered_and_folders_get_seeds() {
        assert_eq!(output_path(Path::new("a/cat.png"), 5, 0, 1), PathBuf::from("a/cat.png"));
        assert_eq!(output_path(Path::new("a/cat.png"), 6, 1, 2), PathBuf::from("a/cat-2.png"));
        assert_eq!(output_path(Path::new("out"), 42, 0, 3), PathBuf::from("out/42.png"));
    }
}
