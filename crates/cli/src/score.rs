//! `darkroom score --prompt TEXT [--clip <folder>] [--aesthetic <file>] IMG…`: one JSON line per
//! image with what can be measured on the device — the CLIP score against the prompt (with a CLIP
//! model folder as transformers saves a `CLIPModel`), the LAION aesthetic predictor's score,
//! sharpness, clipped highlights and shadows, the distance to a palette, and a perceptual hash that marks near-duplicates
//! within the images given.

use std::path::{Path, PathBuf};

use darkroom_gpu::{DType, Gpu, Tensor};
use darkroom_models::clip::ClipTextModel;
use darkroom_models::clip_vision::{clip_score, ClipVisionConfig, ClipVisionModel};
use darkroom_models::config::ClipTextConfig;
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_pipeline::preprocess::clip_pixels;
use darkroom_pipeline::scores::{near_duplicates, Measures};
use darkroom_pipeline::tokenizer::ClipTokenizer;
use darkroom_pipeline::PipelineError;

use crate::failure::{usage, Failure};

#[derive(clap::Args)]
pub struct ScoreArgs {
    /// The prompt the images are scored against (CLIP score).
    #[arg(long)]
    pub prompt: String,
    /// A CLIP model folder (config.json, model.safetensors and the tokenizer, as transformers
    /// saves a CLIPModel, e.g. openai/clip-vit-large-patch14). Without it, no CLIP score.
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// The LAION aesthetic predictor v2's head (`.pth` as published, or `.safetensors`), scoring
    /// the CLIP image embedding (it needs --clip, with the ViT-L/14 it was trained on).
    #[arg(long)]
    pub aesthetic: Option<PathBuf>,
    /// A palette, as comma-separated `#rrggbb` colours (a brand's): each image gets
    /// `palette_delta_e`, the mean CIE76 ΔE of its pixels to the nearest palette colour.
    #[arg(long)]
    pub palette: Option<String>,
    /// The images (PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// A CLIP model for scoring: both towers from one CLIPModel folder.
struct Clip {
    tokenizer: ClipTokenizer,
    text: ClipTextModel,
    vision: ClipVisionModel,
}

fn load_clip(gpu: &Gpu, folder: &Path) -> Result<Clip, Failure> {
    let read = |name: &str| {
        std::fs::read_to_string(folder.join(name))
            .map_err(|e| usage(format!("--clip: cannot read {}: {e}", folder.join(name).display())))
    };
    let config = read("config.json")?;
    let bad = |e: darkroom_models::config::ConfigError| usage(format!("--clip: config.json: {e}"));
    let (vision_cfg, projection) = ClipVisionConfig::from_clip_json(&config).map_err(bad)?;
    let text_cfg = ClipTextConfig::from_clip_json(&config).map_err(bad)?;
    if projection.is_none() {
        return Err(usage("--clip: config.json has no projection_dim (not a CLIPModel)".into()));
    }
    let tokenizer = if folder.join("vocab.json").is_file() {
        ClipTokenizer::from_files(
            &read("vocab.json")?,
            &read("merges.txt")?,
            read("special_tokens_map.json").ok().as_deref(),
        )
    } else {
        ClipTokenizer::from_tokenizer_json(
            &read("tokenizer.json")?,
            read("tokenizer_config.json").ok().as_deref(),
            read("special_tokens_map.json").ok().as_deref(),
        )
    }
    .map_err(|e| usage(format!("--clip: the tokenizer: {e}")))?;
    let weights = std::fs::read(folder.join("model.safetensors"))
        .map_err(|e| usage(format!("--clip: cannot read model.safetensors: {e}")))?;
    let store =
        WeightStore::from_bytes(weights).map_err(|e| usage(format!("--clip: model.safetensors: {e}")))?;
    let root = store.root(gpu, DType::F32, QuantPolicy::F32);
    let model_error = |e: darkroom_models::ModelError| usage(format!("--clip: {e}"));
    Ok(Clip {
        tokenizer,
        text: ClipTextModel::load(&root, &text_cfg).map_err(model_error)?,
        vision: ClipVisionModel::load(&root, &vision_cfg, projection).map_err(model_error)?,
    })
}

pub fn run(gpu: &Gpu, args: ScoreArgs) -> Result<(), Failure> {
    let clip = args.clip.as_deref().map(|f| load_clip(gpu, f)).transpose()?;
    let aesthetic = match &args.aesthetic {
        Some(path) => {
            if clip.is_none() {
                return Err(usage("--aesthetic scores CLIP's image embedding: give --clip too".into()));
            }
            let bytes = std::fs::read(path)
                .map_err(|e| usage(format!("--aesthetic: cannot read {}: {e}", path.display())))?;
            let head = darkroom_models::aesthetic::AestheticHead::from_bytes(&bytes)
                .map_err(|e| usage(format!("--aesthetic: {}: {e}", path.display())))?;
            Some(head)
        }
        None => None,
    };
    let text_embedding = match &clip {
        Some(c) => {
            // CLIP's own tokenisation: start, up to 75 tokens, end, padded to 77.
            let mut ids = vec![c.tokenizer.bos];
            ids.extend(c.tokenizer.encode(&args.prompt).map_err(PipelineError::from)?.into_iter().take(75));
            ids.push(c.tokenizer.eos);
            ids.resize(77, c.tokenizer.pad);
            let out = pollster::block_on(c.text.forward_sdxl(gpu, &ids, 77, true, &[]))
                .map_err(PipelineError::from)?;
            let pooled =
                out.pooled.ok_or_else(|| usage("--clip: the text tower has no projection".into()))?;
            Some(pollster::block_on(pooled.read_f32(gpu)).map_err(PipelineError::from)?)
        }
        None => None,
    };
    let palette = match &args.palette {
        Some(text) => parse_palette(text)?,
        None => Vec::new(),
    };
    let mut seen: Vec<(u64, String)> = Vec::new();
    for path in &args.images {
        let image = crate::generate::read_png(path, "image")?;
        let mut line = serde_json::Map::new();
        let file = path.display().to_string();
        line.insert("file".into(), file.clone().into());
        if let (Some(c), Some(text)) = (&clip, &text_embedding) {
            let size = c.vision.config().image_size;
            let pixels = Tensor::from_f32(gpu, &[1, 3, size, size], &clip_pixels(&image, size), DType::F32)
                .map_err(PipelineError::from)?;
            let embedding =
                pollster::block_on(c.vision.forward(gpu, &pixels)).map_err(PipelineError::from)?;
            let embedding = pollster::block_on(embedding.read_f32(gpu)).map_err(PipelineError::from)?;
            line.insert("clip_score".into(), (clip_score(&embedding, text) as f64).into());
            if let Some(head) = &aesthetic {
                let score = head.score(&embedding).map_err(|e| usage(format!("--aesthetic: {e}")))?;
                line.insert("aesthetic".into(), (score as f64).into());
            }
        }
        let measures = Measures::of(&image, &palette);
        line.insert("sharpness".into(), measures.sharpness.into());
        line.insert("clipped_highlights".into(), measures.clipped_highlights.into());
        line.insert("clipped_shadows".into(), measures.clipped_shadows.into());
        if let Some(delta) = measures.palette_delta_e {
            line.insert("palette_delta_e".into(), delta.into());
        }
        let hash = measures.phash;
        line.insert("phash".into(), format!("{hash:016x}").into());
        // The first earlier image of the batch this one nearly repeats.
        if let Some((_, first)) = seen.iter().find(|(h, _)| near_duplicates(*h, hash)) {
            line.insert("duplicate_of".into(), first.clone().into());
        }
        seen.push((hash, file));
        println!("{}", serde_json::Value::Object(line));
    }
    Ok(())
}

/// `--palette "#112233,#abcdef"`.
fn parse_palette(text: &str) -> Result<Vec<[u8; 3]>, Failure> {
    let colours: Vec<&str> = text.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
    if colours.is_empty() {
        return Err(usage("--palette: give colours as #rrggbb, separated by commas".into()));
    }
    colours
        .iter()
        .map(|c| {
            darkroom_workflow::brief::parse_hex(c)
                .ok_or_else(|| usage(format!("--palette: {c:?} is not a colour (write #rrggbb)")))
        })
        .collect()
}
