//! `darkroom score --prompt TEXT [--clip <folder>] [--aesthetic <file>] IMG…`: one JSON line per
//! image with what can be measured on the device — the CLIP score against the prompt (with a CLIP
//! model folder as transformers saves a `CLIPModel`), the LAION aesthetic predictor's score,
//! sharpness, clipped highlights and shadows, and a perceptual hash that marks near-duplicates
//! within the images given.

use std::path::{Path, PathBuf};

use darkroom_gpu::{DType, Gpu, Tensor};
use darkroom_models::clip::ClipTextModel;
use darkroom_models::clip_vision::{clip_score, ClipVisionConfig, ClipVisionModel};
use darkroom_models::config::ClipTextConfig;
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_pipeline::preprocess::clip_pixels;
use darkroom_pipeline::tokenizer::ClipTokenizer;
use darkroom_pipeline::{Image, PipelineError};

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
    /// The images (PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// Variance of the Laplacian of the grey image, as `cv2.Laplacian(cv2.cvtColor(img,
/// cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()`: higher is sharper.
pub fn sharpness(image: &Image) -> f64 {
    let (w, h) = (image.width, image.height);
    // OpenCV's 8-bit RGB→grey: 14-bit fixed-point weights, rounded.
    let grey: Vec<i32> = image
        .rgba
        .chunks_exact(4)
        .map(|p| (p[0] as i32 * 4899 + p[1] as i32 * 9617 + p[2] as i32 * 1868 + (1 << 13)) >> 14)
        .collect();
    // BORDER_REFLECT_101: -1 → 1, n → n - 2.
    let reflect = |i: isize, n: usize| -> usize {
        if n == 1 {
            0
        } else if i < 0 {
            (-i) as usize
        } else if i as usize >= n {
            2 * (n - 1) - i as usize
        } else {
            i as usize
        }
    };
    let at = |x: isize, y: isize| grey[reflect(y, h) * w + reflect(x, w)] as f64;
    let mut values = Vec::with_capacity(w * h);
    for y in 0..h as isize {
        for x in 0..w as isize {
            values.push(at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y));
        }
    }
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / values.len().max(1) as f64
}

/// The perceptual hash the imagehash library computes (`phash`, hash size 8): PIL's grey, a
/// 32x32 Lanczos resize, a 2-D DCT-II (scipy's, unnormalised), the top-left 8x8 compared with its
/// median; bits row by row, the first the most significant.
pub fn phash(image: &Image) -> u64 {
    // PIL's RGB → L: (R·19595 + G·38470 + B·7471 + 0x8000) >> 16.
    let grey: Vec<u8> = image
        .rgba
        .chunks_exact(4)
        .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
        .collect();
    let grey_image = Image {
        width: image.width,
        height: image.height,
        rgba: grey.iter().flat_map(|&g| [g, g, g, 255]).collect(),
    };
    let small = darkroom_pipeline::preprocess::resize_lanczos(&grey_image, 32, 32);
    let x: Vec<f64> = small.rgba.chunks_exact(4).map(|p| p[0] as f64).collect();
    let n = 32;
    let cos: Vec<f64> = (0..n * n)
        .map(|i| (std::f64::consts::PI * (i / n) as f64 * (2 * (i % n) + 1) as f64 / (2 * n) as f64).cos())
        .collect();
    // Along the columns (axis 0), then the rows (axis 1); only the 8 lowest frequencies each way.
    let mut cols = vec![0.0f64; 8 * n];
    for k in 0..8 {
        for c in 0..n {
            cols[k * n + c] = 2.0 * (0..n).map(|r| x[r * n + c] * cos[k * n + r]).sum::<f64>();
        }
    }
    let mut low = [0.0f64; 64];
    for k in 0..8 {
        for l in 0..8 {
            low[k * 8 + l] = 2.0 * (0..n).map(|c| cols[k * n + c] * cos[l * n + c]).sum::<f64>();
        }
    }
    let mut sorted = low;
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[31] + sorted[32]) / 2.0;
    low.iter().fold(0u64, |hash, &v| (hash << 1) | (v > median) as u64)
}

/// Hashes at most this many bits apart are near-duplicates.
pub const DUPLICATE_BITS: u32 = 6;

/// Shares of pixels blown out (a channel at 255) and crushed (every channel at 0).
pub fn clipping(image: &Image) -> (f64, f64) {
    let n = (image.width * image.height).max(1) as f64;
    let px = image.rgba.chunks_exact(4);
    let high = px.clone().filter(|p| p[..3].contains(&255)).count() as f64;
    let low = px.filter(|p| p[..3] == [0, 0, 0]).count() as f64;
    (high / n, low / n)
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
        line.insert("sharpness".into(), sharpness(&image).into());
        let (high, low) = clipping(&image);
        line.insert("clipped_highlights".into(), high.into());
        line.insert("clipped_shadows".into(), low.into());
        let hash = phash(&image);
        line.insert("phash".into(), format!("{hash:016x}").into());
        // The first earlier image of the batch this one nearly repeats.
        if let Some((_, first)) = seen.iter().find(|(h, _)| (h ^ hash).count_ones() <= DUPLICATE_BITS) {
            line.insert("duplicate_of".into(), first.clone().into());
        }
        seen.push((hash, file));
        println!("{}", serde_json::Value::Object(line));
    }
    Ok(())
}
