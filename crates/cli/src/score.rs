//! `darkroom score --prompt TEXT [--clip <folder>] [--aesthetic <file>] IMG…`: one JSON line per
//! image with what can be measured on the device — the CLIP score against the prompt (with a CLIP
//! model folder as transformers saves a `CLIPModel`), the LAION aesthetic predictor's score,
//! sharpness, clipped highlights and shadows, the distance to a palette, and a perceptual hash that marks near-duplicates
//! within the images given.

use std::path::{Path, PathBuf};

use darkroom_gpu::{DType, Gpu};
use darkroom_pipeline::scorer::{check_head, clip_score, ClipScorer};
use darkroom_pipeline::scores::{near_duplicates, Measures};

use crate::failure::{usage, Failure};

#[derive(clap::Args)]
pub struct ScoreArgs {
    /// The prompt the images are scored against (CLIP score).
    #[arg(long)]
    pub prompt: String,
    /// A CLIP model: a downloaded model's id (`clip-vit-large-patch14`, see `darkroom models
    /// list`) or a folder as transformers saves a CLIPModel (config.json, model.safetensors and
    /// the tokenizer). Without it, no CLIP score.
    #[arg(long, value_name = "ID|FOLDER")]
    pub clip: Option<PathBuf>,
    /// The LAION aesthetic predictor v2's head: a downloaded model's id (`aesthetic-v2`) or the
    /// file (`.pth` as published, or `.safetensors`). It scores the CLIP image embedding, so it
    /// needs --clip, with the ViT-L/14 it was trained on.
    #[arg(long, value_name = "FILE|ID")]
    pub aesthetic: Option<PathBuf>,
    /// A palette, as comma-separated `#rrggbb` colours (a brand's): each image gets
    /// `palette_delta_e`, the mean CIE76 ΔE of its pixels to the nearest palette colour.
    #[arg(long)]
    pub palette: Option<String>,
    /// The images (PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

fn load_clip(gpu: &Gpu, folder: &Path) -> Result<ClipScorer, Failure> {
    if !folder.is_dir() {
        return Err(usage(format!("--clip: {} is not a folder", folder.display())));
    }
    let files = darkroom_pipeline::Folder(folder.to_path_buf());
    let mut quiet = |_: &str, _: u64, _: u64| {};
    pollster::block_on(ClipScorer::load(gpu, &files, DType::F32, &mut quiet))
        .map_err(|e| usage(format!("--clip {}: {e}", folder.display())))
}

/// A folder or file as given, else a downloaded model of that id: its folder, or with `file`
/// its first file.
fn local_or_downloaded(given: &Path, file: bool) -> Result<PathBuf, Failure> {
    if given.exists() {
        return Ok(given.to_path_buf());
    }
    let id = given.to_string_lossy();
    let looks_like_id =
        !id.is_empty() && !id.contains(['/', '\\']) && !id.ends_with(".pth") && !id.ends_with(".safetensors");
    if !looks_like_id {
        return Err(usage(format!("{} does not exist", given.display())));
    }
    let dir = crate::models::resolve(&id, None)?;
    if !file {
        return Ok(dir);
    }
    let manifest = darkroom_weights::manifest::find(&id).map_err(|e| usage(e.to_string()))?;
    Ok(dir.join(&manifest.files[0].path))
}

pub fn run(gpu: &Gpu, args: ScoreArgs) -> Result<(), Failure> {
    let clip_dir = args.clip.as_deref().map(|f| local_or_downloaded(f, false)).transpose()?;
    let clip = clip_dir.as_deref().map(|f| load_clip(gpu, f)).transpose()?;
    let aesthetic_file = args.aesthetic.as_deref().map(|f| local_or_downloaded(f, true)).transpose()?;
    let aesthetic = match &aesthetic_file {
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
    if let (Some(c), Some(head)) = (&clip, &aesthetic) {
        check_head(head, c).map_err(|e| usage(format!("--aesthetic: {e}")))?;
    }
    let text_embedding = match &clip {
        Some(c) if c.has_text() => Some(pollster::block_on(c.text_embedding(gpu, &args.prompt))?),
        Some(_) if aesthetic.is_none() => {
            return Err(usage(
                "--clip: this CLIP model is the vision tower alone: it gives the aesthetic score (--aesthetic), not CLIP scores"
                    .into(),
            ))
        }
        _ => None,
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
        if let Some(c) = &clip {
            let embedding = pollster::block_on(c.image_embedding(gpu, &image))?;
            if let Some(text) = &text_embedding {
                line.insert("clip_score".into(), (clip_score(&embedding, text) as f64).into());
            }
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
