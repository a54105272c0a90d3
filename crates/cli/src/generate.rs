//! `darkroom generate`: txt2img, img2img and inpainting from a diffusers folder to PNGs that
//! carry A1111's `parameters` chunk.

use std::io::Write;
use std::path::{Path, PathBuf};

use darkroom_engine::policy::{self, Activations, Weights};
use darkroom_engine::{EngineError, LoraSource, ModelCache, ModelKey};
use darkroom_pipeline::preset::Preset;
use darkroom_workflow::{Styles, Wildcards};

use crate::failure::{usage, Failure};
use darkroom_gpu::Gpu;
use darkroom_pipeline::{
    short_hash, Folder, FolderQuantCache, Generated, Image, ImageRef, PipelineError, Recipe, Request,
    Sampler, StableDiffusion, VaeTiling,
};

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// What to make. A1111 syntax: (word:1.3), (word), [word], \( \), BREAK.
    #[arg(long)]
    pub prompt: String,
    #[command(flatten)]
    pub settings: Settings,
    /// Output PNG (a batch adds -1, -2 … before .png), or a folder to write <seed>.png into.
    #[arg(long)]
    pub out: PathBuf,
}

/// Every generation setting but the prompt and the output: shared by `generate` and `batch`.
#[derive(clap::Args, Clone)]
pub struct Settings {
    /// A model id from `darkroom models list` (downloaded with `darkroom models fetch`), or a
    /// diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long)]
    pub model: PathBuf,
    /// What to steer away from.
    #[arg(long, default_value = "")]
    pub negative: String,
    /// Random seed; image i of a batch uses seed + i. Default: a random one (printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Denoising steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// euler, euler_a, dpmpp_2m, dpmpp_2m_karras, ddim, lcm, turbo (or A1111's names: "Euler a", "DPM++ 2M Karras", …).
    #[arg(long, default_value = "dpmpp_2m_karras", value_parser = parse_sampler)]
    pub sampler: Sampler,
    /// Classifier-free guidance scale; 1 or less skips the unconditional pass (SD-Turbo: 0).
    #[arg(long, default_value_t = 7.0)]
    pub cfg: f32,
    /// Default: the --init image's size (after --outpaint), else 512.
    #[arg(long)]
    pub width: Option<usize>,
    /// Default: the --init image's size (after --outpaint), else 512.
    #[arg(long)]
    pub height: Option<usize>,
    /// Images per run, one UNet batch (seeds seed, seed+1, …).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Runs one after another (A1111's batch count), seeds continuing after the earlier runs'.
    #[arg(long, default_value_t = 1)]
    pub batch_count: usize,
    /// img2img / inpainting source image (PNG, the output size).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// How much of --init to redo, 0 < S ≤ 1 (default 0.75 for img2img, 1 with --mask).
    #[arg(long)]
    pub strength: Option<f64>,
    /// Inpainting mask (PNG, the output size): white repaints, black keeps. Outpainting: extend
    /// the canvas of --init and paint the new area white.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Outpainting: extend --init by LEFT,TOP,RIGHT,BOTTOM pixels and paint the new area (the
    /// mask is made for you, overlapping the old edge by 8 pixels).
    #[arg(long, value_parser = parse_margins, value_name = "L,T,R,B")]
    pub outpaint: Option<[usize; 4]>,
    /// A LoRA to merge, as FILE or FILE:SCALE (default 1); repeatable. Recorded in the PNG's
    /// prompt as `<lora:name:scale>`.
    #[arg(long = "lora", value_name = "FILE[:SCALE]")]
    pub loras: Vec<String>,
    /// Where `<lora:name:scale>` tags in the prompt find name.safetensors (default: the
    /// download cache's loras/ folder).
    #[arg(long)]
    pub lora_dir: Option<PathBuf>,
    /// Where textual-inversion embeddings are (NAME.safetensors / NAME.pt, written as NAME in a
    /// prompt or negative prompt; default: the download cache's embeddings/ folder).
    #[arg(long)]
    pub embedding_dir: Option<PathBuf>,
    /// Weight storage on the GPU: none (as stored), q8 (int8 per row), q4 (4-bit per group).
    #[arg(long, value_enum, default_value = "none")]
    pub quant: Quant,
    /// Activations: f32, f16 (needs shader-f16); auto picks f16 when the adapter has it.
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: PrecisionArg,
    /// Read the prompt as a dynamic prompt template (sd-dynamic-prompts' syntax: {a|b},
    /// {2$$a|b|c}, __wildcard__, ${var=…}): random gives each image its own expansion, picked by
    /// the image's seed; combinatorial makes every combination (each with the batch settings).
    /// The template is recorded as `Template:` in each image's parameters.
    #[arg(long, value_enum, default_value = "off")]
    pub dynamic: Dynamic,
    /// Wildcard files for templates (name.txt, one value a line; folders give
    /// __folder/name__). Default: the cache folder's wildcards/, if there.
    #[arg(long)]
    pub wildcards: Option<PathBuf>,
    /// A style from the styles file, applied to the prompt and the negative prompt as A1111
    /// does (`{prompt}` in the style takes the prompt, else it is appended); repeatable.
    #[arg(long = "style", value_name = "NAME")]
    pub style: Vec<String>,
    /// A1111 styles.csv (name,prompt,negative_prompt). Default: styles.csv in the download
    /// cache's folder.
    #[arg(long = "styles", value_name = "FILE")]
    pub styles_file: Option<PathBuf>,
    /// A brand preset (JSON: a style plus LoRAs, sampler, steps, CFG, allowed sizes and aspect
    /// ratios, palette, seed policy) applied to every image or job; its settings override the
    /// flags', and each image records `Preset: NAME`. Without --width/--height the first size
    /// it allows is used; a size it does not allow is refused.
    #[arg(long, value_name = "FILE")]
    pub preset: Option<PathBuf>,
    /// VAE decode: auto (tiled above 512x512 pixels or where the whole image would not fit the
    /// GPU's buffers), off (whole image), or a tile side in latent pixels (8 image pixels
    /// each). Tiled decoding gives the same image up to rounding with far less memory.
    #[arg(long, value_parser = parse_vae_tiling, default_value = "auto", value_name = "auto|off|N")]
    pub vae_tiling: VaeTiling,
    /// A ControlNet unit: model=<id|folder>,image=<png>[,pre=none|canny|lineart|scribble|depth|tile]
    /// [,weight=W][,start=S][,end=E][,low=L,high=H] (defaults: pre=none, weight=1, start=0,
    /// end=1, low=100, high=200); repeatable, the units' residuals summed. The image is resized
    /// to the output size (Lanczos) when it differs.
    #[arg(long = "control", value_parser = crate::control::parse_control, value_name = "model=…,image=…")]
    pub controls: Vec<darkroom_pipeline::ControlUnit>,
    /// The Depth Anything model pre=depth runs: an id (default depth-anything-v2-small, fetched
    /// with `darkroom models fetch`) or a transformers folder (config.json, model.safetensors).
    #[arg(long, value_name = "id|folder")]
    pub depth_model: Option<String>,
    /// A1111's hires fix: SCALE[,steps=N][,strength=S][,upscaler=lanczos|latent|latent-nearest|<file|id>]
    /// — make the image, upscale it by SCALE (a plain Lanczos resize, an ESRGAN-family model,
    /// or its latents resized: A1111's Latent / Latent (nearest)), then redraw it with an
    /// img2img pass (N steps, 0 = --steps; strength S, default 0.7).
    #[arg(long, value_parser = parse_hires, value_name = "SCALE[,steps=N][,strength=S][,upscaler=…]")]
    pub hires: Option<darkroom_pipeline::Hires>,
    /// A1111's SD upscale: SCALE[,upscaler=lanczos|<file|id>][,tile=N][,overlap=N] — upscale
    /// --init by SCALE, then redraw it by img2img tile by tile (tiles of N pixels, default 512,
    /// sharing `overlap` pixels, default 64, blended), each tile with the seed, --strength and
    /// --steps. The output is the upscaled size.
    #[arg(long, value_parser = parse_sd_upscale, value_name = "SCALE[,upscaler=…][,tile=N][,overlap=N]")]
    pub sd_upscale: Option<darkroom_pipeline::SdUpscale>,
    /// Drafts: each image decoded by TAESD (milliseconds, where the full VAE takes seconds), its
    /// final latents kept inside the PNG; `darkroom finish DRAFT.png…` later makes the full
    /// image from them without sampling again — the pixels a run without --draft gives (hires
    /// fix included). TAESD: a model id (default `taesd`: `darkroom models fetch taesd`), a
    /// folder with taesd_decoder.safetensors, or that file (SDXL models need taesdxl's).
    #[arg(long, num_args = 0..=1, default_missing_value = "taesd", value_name = "TAESD")]
    pub draft: Option<String>,
    /// No progress on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl Settings {
    /// The defaults for `model`, as the flags' (`darkroom finish` runs a kept recipe with them).
    pub fn for_model(model: PathBuf) -> Settings {
        Settings {
            model,
            negative: String::new(),
            seed: None,
            steps: 20,
            sampler: Sampler::DpmPp2mKarras,
            cfg: 7.0,
            width: None,
            height: None,
            batch: 1,
            batch_count: 1,
            init: None,
            strength: None,
            mask: None,
            outpaint: None,
            loras: Vec::new(),
            lora_dir: None,
            embedding_dir: None,
            quant: Quant::None,
            precision: PrecisionArg::Auto,
            dynamic: Dynamic::Off,
            wildcards: None,
            style: Vec::new(),
            styles_file: None,
            preset: None,
            vae_tiling: VaeTiling::Auto,
            controls: Vec::new(),
            depth_model: None,
            hires: None,
            sd_upscale: None,
            draft: None,
            quiet: false,
        }
    }
}

/// `SCALE[,key=value…]`: the scale and each setting, in order.
fn scale_and_settings(s: &str) -> Result<(f64, Vec<(&str, &str)>), String> {
    let mut parts = s.split(',');
    let scale = parts.next().unwrap_or_default().trim();
    let scale =
        scale.parse().map_err(|_| format!("expected SCALE first, such as 2 or 1.5; got {scale:?}"))?;
    let settings = parts
        .map(|part| {
            let (key, value) =
                part.split_once('=').ok_or_else(|| format!("expected key=value, got {part:?}"))?;
            Ok((key.trim(), value.trim()))
        })
        .collect::<Result<_, String>>()?;
    Ok((scale, settings))
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("{key}={value:?} is not a number"))
}

fn parse_sd_upscale(s: &str) -> Result<darkroom_pipeline::SdUpscale, String> {
    let (scale, settings) = scale_and_settings(s)?;
    let mut up = darkroom_pipeline::SdUpscale { scale, ..darkroom_pipeline::SdUpscale::default() };
    for (key, value) in settings {
        match key {
            "upscaler" => up.upscaler = value.to_string(),
            "tile" => up.tile = number(key, value)?,
            "overlap" => up.overlap = number(key, value)?,
            other => return Err(format!("unknown key {other:?} (keys: upscaler, tile, overlap)")),
        }
    }
    Ok(up)
}

fn parse_hires(s: &str) -> Result<darkroom_pipeline::Hires, String> {
    let (scale, settings) = scale_and_settings(s)?;
    let mut hires = darkroom_pipeline::Hires { scale, ..darkroom_pipeline::Hires::default() };
    for (key, value) in settings {
        match key {
            "steps" => hires.steps = number(key, value)?,
            "strength" => hires.strength = number(key, value)?,
            "upscaler" => hires.upscaler = darkroom_pipeline::recipe::hires_upscaler_name(value),
            other => return Err(format!("unknown key {other:?} (keys: steps, strength, upscaler)")),
        }
    }
    Ok(hires)
}

pub fn parse_vae_tiling(s: &str) -> Result<VaeTiling, String> {
    match s {
        "auto" => Ok(VaeTiling::Auto),
        "off" => Ok(VaeTiling::Off),
        n => match n.parse::<usize>() {
            Ok(t) if (1..=1024).contains(&t) => Ok(VaeTiling::Tiles(t)),
            _ => Err(format!("expected auto, off or a tile side from 1 to 1024 latent pixels, got {s:?}")),
        },
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dynamic {
    Off,
    Random,
    Combinatorial,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Quant {
    None,
    Q8,
    Q4,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PrecisionArg {
    F32,
    F16,
    Auto,
}

fn parse_sampler(s: &str) -> Result<Sampler, String> {
    s.parse()
}

fn parse_margins(s: &str) -> Result<[usize; 4], String> {
    let parts: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("expected LEFT,TOP,RIGHT,BOTTOM in pixels, such as 0,0,128,0; got {s:?}"))?;
    match parts[..] {
        [l, t, r, b] if l + t + r + b > 0 => Ok([l, t, r, b]),
        _ => Err(format!("expected four margins, not all zero, such as 0,0,128,0; got {s:?}")),
    }
}

pub fn read_png(path: &Path, what: &str) -> Result<Image, Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| usage(format!("cannot read the {what} {}: {e}", path.display())))?;
    Image::from_png(&bytes).map_err(|e| usage(format!("the {what} {}: {e}", path.display())))
}

/// `--out x.png` names a file; anything else, a folder.
fn names_a_png(out: &Path) -> bool {
    out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// Where image `index` of `count` goes.
fn output_path(out: &Path, seed: u64, index: usize, count: usize) -> PathBuf {
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
struct FileLoras {
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
fn lora_files(settings: &Settings) -> (FileLoras, String) {
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

/// The activations `--precision` asks for.
pub fn activations(precision: PrecisionArg) -> Activations {
    match precision {
        PrecisionArg::F32 => Activations::F32,
        PrecisionArg::F16 => Activations::F16,
        PrecisionArg::Auto => Activations::Auto,
    }
}

/// A seed from the clock, in A1111's range.
pub fn random_seed() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos % 4_294_967_295) as u64
}

/// A model id or a diffusers folder as the folder (an id is fetched first).
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
fn load_styles(settings: &Settings) -> Result<Styles, Failure> {
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
fn load_preset(path: &Path) -> Result<Preset, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("--preset: cannot read {}: {e}", path.display())))?;
    Preset::parse(&text).map_err(|e| usage(format!("--preset {}: {e}", path.display())))
}

/// What every run of one command shares: the GPU, the settings, the images read once, the
/// styles, the loaded models (kept between runs while the model and LoRAs stay the same).
pub struct Runner<'g> {
    gpu: &'g Gpu,
    pub settings: Settings,
    precision: darkroom_pipeline::Precision,
    init_image: Option<Image>,
    mask: Option<Image>,
    pub styles: Styles,
    wildcards: Wildcards,
    preset: Option<Preset>,
    loaded: ModelCache<(StableDiffusion, String)>,
    controls: crate::control::Controls,
    upscalers: std::collections::HashMap<String, darkroom_models::upscale::Upscaler>,
    /// The TAESD decoder of --draft, loaded with the first draft.
    taesd: Option<darkroom_models::taesd::TaesdDecoder>,
}

impl<'g> Runner<'g> {
    pub fn new(gpu: &'g Gpu, settings: Settings) -> Result<Runner<'g>, Failure> {
        let weights = match settings.quant {
            Quant::None => Weights::AsStored,
            Quant::Q8 => Weights::Q8,
            Quant::Q4 => Weights::Q4,
        };
        let precision =
            policy::precision(gpu.capabilities().shader_f16, activations(settings.precision), weights)?;
        if settings.outpaint.is_some() && settings.init.is_none() {
            return Err(usage("--outpaint extends --init; give the image to extend".into()));
        }
        let init_image = settings.init.as_deref().map(|p| read_png(p, "init image")).transpose()?;
        let mask = settings.mask.as_deref().map(|p| read_png(p, "mask")).transpose()?;
        let styles = load_styles(&settings)?;
        let preset = settings.preset.as_deref().map(load_preset).transpose()?;
        let default_dir = darkroom_weights::native::default_cache_dir().join("wildcards");
        let wildcards = match &settings.wildcards {
            Some(dir) => read_wildcards(dir)?,
            None if default_dir.is_dir() => read_wildcards(&default_dir)?,
            None => Wildcards::new(),
        };
        let depth_model = settings.depth_model.clone();
        Ok(Runner {
            gpu,
            settings,
            precision,
            init_image,
            mask,
            styles,
            wildcards,
            preset,
            loaded: ModelCache::default(),
            controls: crate::control::Controls::new(depth_model),
            upscalers: Default::default(),
            taesd: None,
        })
    }

    /// The recipe (its seed set) as the runs --dynamic makes of its prompt: one recipe per
    /// image in random mode (seed s + i picks image i's expansion), one per combination in
    /// combinatorial mode (seeds continuing); the recipe itself when --dynamic is off or the
    /// prompt is plain text.
    pub fn expand(&self, recipe: Recipe) -> Result<Vec<Recipe>, Failure> {
        let mode = match self.settings.dynamic {
            Dynamic::Off => darkroom_pipeline::Dynamic::Off,
            Dynamic::Random => darkroom_pipeline::Dynamic::Random,
            Dynamic::Combinatorial => darkroom_pipeline::Dynamic::Combinatorial,
        };
        let expanded = darkroom_pipeline::dynamic::expand(&recipe, mode, &self.wildcards)
            .map_err(|e| usage(format!("--prompt: {e}")))?;
        for name in &expanded.missing {
            eprintln!("warning: wildcard __{name}__ has no values (--wildcards); it is left in the prompt as written");
        }
        Ok(expanded.recipes)
    }

    /// The settings as a recipe for `prompt` (the seed left for the caller). The size defaults
    /// to the init image's (extended by --outpaint), else 512 x 512.
    pub fn recipe(&self, prompt: &str) -> Recipe {
        let s = &self.settings;
        let file = |p: &Path| ImageRef::File(p.display().to_string());
        let [left, top, right, bottom] = s.outpaint.unwrap_or_default();
        // As diffusers: the init image's size, else the first control image's rounded down to
        // a multiple of 8, else 512.
        let control_size = match s.controls.first().and_then(|u| u.image.as_ref()) {
            Some(ImageRef::File(path)) => crate::generate::read_png(Path::new(path), "control image")
                .ok()
                .map(|img| ((img.width / 8 * 8).max(8), (img.height / 8 * 8).max(8))),
            _ => None,
        };
        let (width, height) = match (&self.init_image, control_size) {
            (Some(img), _) if s.sd_upscale.is_some() => {
                s.sd_upscale.as_ref().map_or((img.width, img.height), |u| u.size(img.width, img.height))
            }
            (Some(img), _) => (img.width + left + right, img.height + top + bottom),
            (None, Some(size)) => size,
            (None, None) => (512, 512),
        };
        Recipe {
            model: s.model.display().to_string(),
            prompt: prompt.to_string(),
            negative_prompt: s.negative.clone(),
            seed: s.seed,
            steps: s.steps,
            sampler: s.sampler,
            cfg_scale: s.cfg,
            width: s.width.unwrap_or(width),
            height: s.height.unwrap_or(height),
            batch_size: s.batch,
            batch_count: s.batch_count,
            init: s.init.as_deref().map(file),
            mask: s.mask.as_deref().map(file),
            outpaint: s.outpaint,
            strength: s.strength,
            template: None,
            preset: None,
            controls: s.controls.clone(),
            hires: s.hires.clone(),
            sd_upscale: s.sd_upscale.clone(),
            draft: s.draft.is_some(),
        }
    }

    /// Job `job`'s recipe under --preset (the recipe itself without one). `size_chosen`: the
    /// size was asked for (a flag, a job's field), so one the preset does not allow is refused
    /// rather than replaced by the preset's first.
    pub fn apply_preset(&self, recipe: Recipe, job: usize, size_chosen: bool) -> Result<Recipe, Failure> {
        match &self.preset {
            Some(preset) => {
                preset.apply(&recipe, job, size_chosen).map_err(|e| usage(format!("--preset: {e}")))
            }
            None => Ok(recipe),
        }
    }

    /// Whether the flags choose the size (--width, --height, an init image's).
    pub fn size_chosen(&self) -> bool {
        self.settings.width.is_some() || self.settings.height.is_some() || self.init_image.is_some()
    }

    /// `recipe` with the named styles applied to its prompts.
    pub fn apply_styles(&self, recipe: &mut Recipe, names: &[String]) -> Result<(), Failure> {
        let (prompt, negative) = self
            .styles
            .apply(names, &recipe.prompt, &recipe.negative_prompt)
            .map_err(|e| usage(format!("--style: {e}")))?;
        recipe.prompt = prompt;
        recipe.negative_prompt = negative;
        Ok(())
    }

    /// Makes the recipe's images (its seed must be set); with the hires fix, each is then
    /// upscaled and redrawn by an img2img pass at the larger size (same seed), and recorded with
    /// the recipe that made it.
    pub fn run(&mut self, recipe: Recipe, label: &str) -> Result<Vec<Generated>, Failure> {
        if recipe.sd_upscale.is_some() {
            return self.run_sd_upscale(recipe, label);
        }
        if recipe.hires.is_some() {
            // The hires settings checked before an upscaler model is looked for.
            recipe
                .validate(&darkroom_pipeline::ModelInfo::stable_diffusion(&recipe.model, false))
                .map_err(PipelineError::from)?;
        }
        // A draft is the first pass; its recipe keeps the hires settings for finishing.
        self.run_once(recipe, None, label)
    }

    /// SD upscale: the init image upscaled to the recipe's size, then each tile redrawn by
    /// img2img (the recipe's seed, steps and strength, batch 1) and the tiles blended.
    fn run_sd_upscale(&mut self, recipe: Recipe, label: &str) -> Result<Vec<Generated>, Failure> {
        use darkroom_pipeline::upscale::{spans, Blend, Neighbours};
        let Some(up) = recipe.sd_upscale.clone() else { return Ok(Vec::new()) };
        recipe
            .validate(&darkroom_pipeline::ModelInfo::stable_diffusion(&recipe.model, false))
            .map_err(PipelineError::from)?;
        let init = self.init_image.clone().ok_or_else(|| usage("--sd-upscale needs --init".into()))?;
        let (w, h) = (recipe.width, recipe.height);
        let big = self.hires_upscale(&up.upscaler, &init, (w, h))?;
        let (xs, ys) = (spans(w, up.tile, up.overlap, 8), spans(h, up.tile, up.overlap, 8));
        let mut blend = Blend::new(w, h);
        let mut record = None;
        for (yi, &(y0, th)) in ys.iter().enumerate() {
            for (xi, &(x0, tw)) in xs.iter().enumerate() {
                let crop = Image {
                    width: tw,
                    height: th,
                    rgba: (0..th)
                        .flat_map(|y| {
                            big.rgba[((y0 + y) * w + x0) * 4..((y0 + y) * w + x0 + tw) * 4].to_vec()
                        })
                        .collect(),
                };
                let tile_recipe = Recipe {
                    width: tw,
                    height: th,
                    batch_size: 1,
                    batch_count: 1,
                    sd_upscale: None,
                    ..recipe.clone()
                };
                let n = yi * xs.len() + xi + 1;
                let label = format!("{label}tile {n}/{}: ", xs.len() * ys.len());
                let made = self.run_once(tile_recipe, Some(crop), &label)?;
                let tile = made.into_iter().next().ok_or_else(|| usage("a tile made no image".into()))?;
                let neighbours = Neighbours::in_grid(xi, yi, xs.len(), ys.len());
                blend.add((x0, y0), (tw, th), up.overlap, neighbours, |x, y, c| {
                    tile.image.rgba[(y * tw + x) * 4 + c] as f32 / 255.0
                });
                record.get_or_insert(tile.params);
            }
        }
        let mut params = recipe.to_params(&record.and_then(|p| p.model).unwrap_or_default(), 0);
        params.width = w as u32;
        params.height = h as u32;
        Ok(vec![Generated::new(blend.finish(), params)])
    }

    /// The first pass's image at the second pass's size: Lanczos, or an upscaler model then
    /// Lanczos to the exact size.
    fn hires_upscale(
        &mut self,
        upscaler: &str,
        image: &Image,
        (w, h): (usize, usize),
    ) -> Result<Image, Failure> {
        use darkroom_pipeline::preprocess::resize_lanczos;
        if upscaler.eq_ignore_ascii_case(darkroom_pipeline::recipe::HIRES_LANCZOS) {
            return Ok(resize_lanczos(image, w, h));
        }
        self.load_upscaler(upscaler)?;
        let model = &self.upscalers[upscaler];
        let quiet = self.settings.quiet;
        let mut progress = |done: usize, total: usize| {
            if !quiet {
                crate::progress!("\rupscaling: tile {done}/{total}   ");
            }
            true
        };
        let big = pollster::block_on(darkroom_pipeline::upscale::upscale(
            self.gpu,
            model,
            model.dtype,
            image,
            None,
            &mut progress,
        ))?;
        Ok(if (big.width, big.height) == (w, h) { big } else { resize_lanczos(&big, w, h) })
    }

    /// Upscaler model `name` (a file or a downloaded id), loaded once.
    fn load_upscaler(&mut self, name: &str) -> Result<(), Failure> {
        if !self.upscalers.contains_key(name) {
            let model = crate::upscale::load(self.gpu, Path::new(name), self.precision.activations)?;
            self.upscalers.insert(name.to_string(), model);
        }
        Ok(())
    }

    /// The upscaler model `recipe`'s hires fix names (loaded now), if it names one.
    fn hires_upscaler(&mut self, recipe: &Recipe) -> Result<Option<String>, Failure> {
        match &recipe.hires {
            Some(h) if !darkroom_engine::job::runs_hires(h) => {
                self.load_upscaler(&h.upscaler)?;
                Ok(Some(h.upscaler.clone()))
            }
            _ => Ok(None),
        }
    }

    /// A draft's kept latents decoded by the full VAE of the model that made them (`--model`
    /// if given, else the recipe's), then the hires pass if its recipe has one.
    pub fn finish(
        &mut self,
        kept: &darkroom_pipeline::draft::Kept,
        label: &str,
    ) -> Result<Vec<Generated>, Failure> {
        let mut recipe = kept.final_recipe();
        recipe.model = self.settings.model.display().to_string();
        let quiet = self.settings.quiet;
        let seed = darkroom_pipeline::recipe::seed_at(recipe.seed.unwrap_or_default(), kept.index as u64, 1);
        let first = if recipe.hires.as_ref().and_then(|h| h.latent()).is_some() {
            // The kept latents are the first pass's: upscaled as they are, no VAE decode.
            darkroom_engine::job::FirstPass::Latents(kept.values.clone(), kept.shape)
        } else {
            let tiling = self.settings.vae_tiling;
            let gpu = self.gpu;
            let model = load_model(&mut self.loaded, gpu, &self.settings, self.precision, &recipe)?;
            let mut progress = |p: &darkroom_pipeline::Progress| {
                if !quiet {
                    crate::progress!("\r{label}decoding {}/{}   ", p.step, p.total);
                    let _ = std::io::stderr().flush();
                }
                true
            };
            let finished =
                pollster::block_on(darkroom_pipeline::finish(gpu, &model.0, kept, tiling, &mut progress))?;
            if !quiet {
                crate::progress_done!("\r{label}decoded      ");
            }
            if recipe.hires.is_none() {
                return Ok(vec![finished]);
            }
            darkroom_engine::job::FirstPass::Image(finished.image)
        };
        let upscaler = self.hires_upscaler(&recipe)?;
        let (model, request) = self.prepare(recipe, None, label)?;
        let mut progress = |p: &darkroom_pipeline::Progress| {
            if !quiet {
                crate::progress!("\r{label}hires {:?} {}/{}   ", p.stage, p.step, p.total);
                let _ = std::io::stderr().flush();
            }
            true
        };
        let made = pollster::block_on(darkroom_engine::job::hires_second_pass(
            self.gpu,
            &model.0,
            upscaler.as_deref().map(|name| &self.upscalers[name]),
            &request,
            seed,
            first,
            &mut progress,
        ))?;
        if !quiet {
            crate::progress_done!("\r{label}done                ");
        }
        Ok(made)
    }

    /// The TAESD decoder drafts are decoded with (`--draft`'s), loaded once.
    fn load_taesd(&mut self) -> Result<(), Failure> {
        if self.taesd.is_none() {
            let which = self.settings.draft.clone().unwrap_or_else(|| "taesd".into());
            let path = Path::new(&which);
            let file = if path.is_file() {
                path.to_path_buf()
            } else if path.is_dir() {
                path.join("taesd_decoder.safetensors")
            } else {
                crate::models::resolve(&which, None)?.join("taesd_decoder.safetensors")
            };
            let bytes = std::fs::read(&file)
                .map_err(|e| usage(format!("--draft: cannot read {}: {e}", file.display())))?;
            let store = darkroom_models::WeightStore::from_bytes(bytes)
                .map_err(|e| usage(format!("--draft: {}: {e}", file.display())))?;
            let dtype = self.precision.activations;
            let policy = if dtype == darkroom_gpu::DType::F16 {
                darkroom_models::QuantPolicy::F16
            } else {
                darkroom_models::QuantPolicy::F32
            };
            let decoder = darkroom_models::taesd::TaesdDecoder::load(
                &store.root(self.gpu, dtype, policy),
                darkroom_models::taesd::TaesdConfig::SD,
            )
            .map_err(|e| usage(format!("--draft: {} is not a TAESD decoder: {e}", file.display())))?;
            self.taesd = Some(decoder);
        }
        Ok(())
    }

    /// A run's model and request: the LoRA tags added, the model loaded (or reused), the
    /// ControlNets and embeddings; `init` stands in for the init image (the hires pass's).
    fn prepare(
        &mut self,
        mut recipe: Recipe,
        init: Option<Image>,
        label: &str,
    ) -> Result<(std::rc::Rc<(StableDiffusion, String)>, Request), Failure> {
        if recipe.draft {
            self.load_taesd()?;
        }
        let (_, tags) = lora_files(&self.settings);
        recipe.prompt.push_str(&tags);
        let quiet = self.settings.quiet;
        let gpu = self.gpu;
        let model = load_model(&mut self.loaded, gpu, &self.settings, self.precision, &recipe)?;
        let controls = self.controls.load(gpu, self.precision, &recipe.controls, quiet)?;
        let init_image = init.or_else(|| self.init_image.clone());
        let mut request = Request::new(recipe, init_image, self.mask.clone())?;
        request.vae_tiling = self.settings.vae_tiling;
        request.controls = controls;
        let dir = self
            .settings
            .embedding_dir
            .clone()
            .unwrap_or_else(|| darkroom_weights::native::default_cache_dir().join("embeddings"));
        let (embeddings, skipped) = crate::embeddings::load(&dir);
        if !quiet {
            for line in skipped {
                eprintln!("left out {line}");
            }
        }
        request.embeddings = embeddings;
        if !quiet {
            eprintln!("{label}seed {}", request.recipe.seed.unwrap_or_default());
        }
        Ok((model, request))
    }

    /// One run of the recipe; `init` stands in for its init image (the hires pass's).
    fn run_once(
        &mut self,
        recipe: Recipe,
        init: Option<Image>,
        label: &str,
    ) -> Result<Vec<Generated>, Failure> {
        let quiet = self.settings.quiet;
        // A draft's hires fix runs when it is finished.
        let upscaler = if recipe.draft { None } else { self.hires_upscaler(&recipe)? };
        let (model, request) = self.prepare(recipe, init, label)?;
        let started = std::time::Instant::now();
        let mut progress = |event: &darkroom_engine::job::Event| {
            if !quiet {
                let p = event.progress;
                let stage = match p.stage {
                    darkroom_pipeline::Stage::Encoding => "encoding",
                    darkroom_pipeline::Stage::Denoising => "denoising",
                    darkroom_pipeline::Stage::Decoding => "decoding",
                };
                let run = if event.runs > 1 {
                    format!("run {}/{}: ", event.run + 1, event.runs)
                } else {
                    String::new()
                };
                crate::progress!("\r{label}{run}{stage} {}/{}   ", p.step, p.total);
                let _ = std::io::stderr().flush();
            }
            true
        };
        let helpers = darkroom_engine::job::Helpers {
            taesd: self.taesd.as_ref(),
            upscaler: upscaler.as_deref().map(|name| &self.upscalers[name]),
        };
        let images = pollster::block_on(darkroom_engine::job::generate(
            self.gpu,
            &model.0,
            helpers,
            &request,
            &mut progress,
        ))?;
        if !quiet {
            crate::progress_done!(
                "\r{label}done in {:.1} s                ",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(images)
    }
}

/// The recipe's model (its LoRAs merged), loaded or from the cache; its settings checked
/// against the model's configs first.
fn load_model(
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

pub fn run(gpu: &Gpu, args: GenerateArgs) -> Result<(), Failure> {
    let mut runner = Runner::new(gpu, args.settings)?;
    let mut recipe = runner.recipe(&args.prompt);
    recipe.seed = Some(recipe.seed.unwrap_or_else(random_seed));
    let styles = runner.settings.style.clone();
    let recipe = runner.apply_preset(recipe, 0, runner.size_chosen())?;
    let runs = runner.expand(recipe)?;
    let mut images = Vec::new();
    for (i, mut recipe) in runs.iter().cloned().enumerate() {
        runner.apply_styles(&mut recipe, &styles)?;
        let label = if runs.len() > 1 { format!("prompt {}/{}: ", i + 1, runs.len()) } else { String::new() };
        images.extend(runner.run(recipe, &label)?);
    }
    let count = images.len();
    let is_dir = !names_a_png(&args.out);
    let dir =
        if is_dir { args.out.clone() } else { args.out.parent().map(Path::to_path_buf).unwrap_or_default() };
    if !dir.as_os_str().is_empty() {
        std::fs::create_dir_all(&dir).map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    for (i, generated) in images.iter().enumerate() {
        let path = output_path(&args.out, generated.params.seed, i, count);
        write_atomically(&path, &generated.to_png()?)?;
        println!("{}", path.display());
    }
    Ok(())
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
