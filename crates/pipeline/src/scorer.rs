//! Scores that need a model, on the device: the CLIP score of an image against its prompt (OpenAI
//! CLIP's text and vision towers with their projections, from a folder as transformers saves a
//! `CLIPModel`) and the LAION aesthetic predictor's score of CLIP's image embedding. The CLI's
//! `darkroom score` and the app's worker both load and run them through here; the weights stream
//! through the GPU upload (`ModelFiles`), so the 1.7 GB ViT-L/14 checkpoint never sits in memory
//! whole.

use darkroom_gpu::{DType, Gpu, Tensor};
use darkroom_models::aesthetic::AestheticHead;
use darkroom_models::clip::ClipTextModel;
use darkroom_models::clip_vision::{ClipVisionConfig, ClipVisionModel};
use darkroom_models::config::ClipTextConfig;
use darkroom_models::{NoCache, QuantPolicy};

use crate::model::{load_tokenizer, load_weights, ModelFiles};
use crate::preprocess::clip_pixels;
use crate::tokenizer::ClipTokenizer;
use crate::{Image, PipelineError};

pub use darkroom_models::clip_vision::clip_score;

/// CLIP's vision tower with its projection, and the text tower with its tokenizer unless the
/// model is the vision tower alone (enough for the aesthetic score).
pub struct ClipScorer {
    text: Option<(ClipTokenizer, ClipTextModel)>,
    vision: ClipVisionModel,
    /// The width of the projected embeddings.
    width: usize,
    dtype: DType,
}

fn files_error(what: &str) -> impl Fn(darkroom_models::config::ConfigError) -> PipelineError + '_ {
    move |e| PipelineError::Files(format!("{what}: {e}"))
}

impl ClipScorer {
    /// From the files of a `CLIPModel` folder (config.json, model.safetensors, the tokenizer as
    /// vocab.json + merges.txt or tokenizer.json). A model.safetensors without the text tower
    /// (`text_model.*`, as a manifest's `tensors` subset stores it) loads the vision tower alone,
    /// without a tokenizer. `dtype` f16 packs the weights in f16 (half the memory; scores move by
    /// a few hundredths).
    pub async fn load<F: ModelFiles>(
        gpu: &Gpu,
        files: &F,
        dtype: DType,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<ClipScorer, PipelineError> {
        let config = files
            .read("config.json")
            .await?
            .ok_or_else(|| PipelineError::Files("the CLIP model has no config.json".into()))?;
        let config = String::from_utf8_lossy(&config).into_owned();
        let (vision_cfg, projection) =
            ClipVisionConfig::from_clip_json(&config).map_err(files_error("config.json"))?;
        let text_cfg = ClipTextConfig::from_clip_json(&config).map_err(files_error("config.json"))?;
        if projection.is_none() {
            return Err(PipelineError::Files(
                "config.json has no projection_dim: this is not a CLIPModel (both towers and their projections)"
                    .into(),
            ));
        }
        let policy = if dtype == DType::F16 { QuantPolicy::F16 } else { QuantPolicy::F32 };
        let store =
            load_weights(gpu, files, &NoCache, policy, "", &["model.safetensors"], None, false, progress)
                .await?;
        let root = store.root(gpu, dtype, policy);
        let text = if root.contains("text_model.embeddings.token_embedding.weight") {
            Some((load_tokenizer(files, "").await?, ClipTextModel::load(&root, &text_cfg)?))
        } else {
            None
        };
        Ok(ClipScorer {
            text,
            vision: ClipVisionModel::load(&root, &vision_cfg, projection)?,
            width: projection.unwrap_or(0),
            dtype,
        })
    }

    /// Whether the text tower is here (CLIP scores need it; the aesthetic score does not).
    pub fn has_text(&self) -> bool {
        self.text.is_some()
    }

    /// The projected text embedding of `text` (CLIP's tokenisation: start, up to 75 tokens, end,
    /// padded to 77 — longer text is cut, as CLIP's processor does).
    pub async fn text_embedding(&self, gpu: &Gpu, text: &str) -> Result<Vec<f32>, PipelineError> {
        let (t, model) = self.text.as_ref().ok_or_else(|| {
            PipelineError::Input(
                "this CLIP model is the vision tower alone (for the aesthetic score): CLIP scores need the whole model, clip-vit-large-patch14"
                    .into(),
            )
        })?;
        let mut ids = vec![t.bos];
        ids.extend(t.encode(text)?.into_iter().take(75));
        ids.push(t.eos);
        ids.resize(77, t.pad);
        let out = model.forward_sdxl(gpu, &ids, 77, true, &[]).await?;
        let pooled =
            out.pooled.ok_or_else(|| PipelineError::Files("the CLIP text tower has no projection".into()))?;
        Ok(pooled.read_f32(gpu).await?)
    }

    /// The projected image embedding (`image_embeds`) of `image`, preprocessed as
    /// CLIPImageProcessor does (shortest side resized, centre crop, CLIP's mean and std).
    pub async fn image_embedding(&self, gpu: &Gpu, image: &Image) -> Result<Vec<f32>, PipelineError> {
        let size = self.vision.config().image_size;
        let pixels = Tensor::from_f32(gpu, &[1, 3, size, size], &clip_pixels(image, size), self.dtype)?;
        let embedding = self.vision.forward(gpu, &pixels).await?;
        Ok(embedding.read_f32(gpu).await?)
    }

    /// The width of the image embedding (768 for ViT-L/14): what an aesthetic head must read.
    pub fn embedding_width(&self) -> usize {
        self.width
    }
}

/// An aesthetic head that reads `scorer`'s embeddings, or why not.
pub fn check_head(head: &AestheticHead, scorer: &ClipScorer) -> Result<(), PipelineError> {
    let (want, have) = (head.input_width(), scorer.embedding_width());
    if want != have {
        return Err(PipelineError::Input(format!(
            "the aesthetic head reads {want}-wide embeddings but this CLIP model makes {have}-wide ones (the LAION predictor needs ViT-L/14)"
        )));
    }
    Ok(())
}

/// What an image's CLIP score is measured against: its prompt as words — `<lora:…>` tags out,
/// A1111's attention brackets and weights out, `BREAK` a space.
pub fn prompt_words(prompt: &str) -> String {
    let (text, _) = crate::prompt::extract_loras(prompt);
    let mut out = String::new();
    for piece in crate::prompt::parse(&text) {
        match piece {
            crate::prompt::Piece::Text(t, _) => out.push_str(&t),
            crate::prompt::Piece::Break => out.push(' '),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_is_scored_as_its_words() {
        assert_eq!(
            prompt_words("a (red:1.3) fox, [misty] forest <lora:film:0.7> BREAK oil painting"),
            "a red fox, misty forest oil painting"
        );
        assert_eq!(prompt_words(r"a \(literal\) bracket"), "a (literal) bracket");
        assert_eq!(prompt_words(""), "");
    }
}
