//! `darkroom generate`'s arguments: every generation setting as a flag, and the parsers of the
//! flags with their own syntax (`--hires`, `--sd-upscale`, `--vae-tile`, `--outpaint`, …).

use std::path::PathBuf;

use darkroom_pipeline::{Sampler, VaeTiling};

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
    /// Where the text encoders wait between prompts: gpu (resident), host (in memory, uploaded
    /// for each new prompt and freed before the UNet runs: less GPU memory), auto (gpu on a
    /// discrete GPU, host elsewhere).
    #[arg(long, value_enum, default_value = "auto")]
    pub text_encoders: TextEncodersArg,
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
    /// VAE decode: auto (tiled above 512x512 pixels, or at 512x512 for a VAE that runs in f32
    /// such as SDXL's, or where the whole image would not fit the GPU's buffers), off (whole image), or a tile side in latent pixels (8 image pixels
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
            text_encoders: TextEncodersArg::Auto,
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
pub enum TextEncodersArg {
    Auto,
    Gpu,
    Host,
}

impl TextEncodersArg {
    /// The placement on an adapter of `device_type` (`policy::text_encoders` for auto).
    pub fn on(self, device_type: &str) -> darkroom_pipeline::TextEncoders {
        match self {
            TextEncodersArg::Auto => darkroom_engine::policy::text_encoders(device_type),
            TextEncodersArg::Gpu => darkroom_pipeline::TextEncoders::Gpu,
            TextEncodersArg::Host => darkroom_pipeline::TextEncoders::Host,
        }
    }
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
