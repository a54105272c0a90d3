//! The text encoders of a model: each a CLIP text model [`Held`] on the GPU or in host memory
//! between prompts ([`TextEncoders`]), loaded from its folder of a diffusers model.

use darkroom_gpu::Gpu;
use darkroom_models::clip::ClipTextModel;
use darkroom_models::config::ClipTextConfig;
use darkroom_models::held::{Held, InUse};
use darkroom_models::{LoraMerge, QuantCache};

use crate::model::{load_weights, ModelFiles, Precision};
use crate::tokenizer::ClipTokenizer;
use crate::PipelineError;

/// Where the text encoders' weights wait between prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextEncoders {
    /// On the GPU all along: no upload per prompt.
    #[default]
    Gpu,
    /// In host memory, uploaded for each new prompt's encoding and freed before the UNet runs:
    /// the GPU holds them only during the text stage (SDXL's two are ~0.8 GB in int8).
    Host,
}

/// A text encoder and its config, [`Held`] on the GPU or the host.
pub struct TextEncoder {
    config: ClipTextConfig,
    model: Held<ClipTextModel>,
}

impl TextEncoder {
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// The encoder on the GPU for one encoding (uploaded now when it waits on the host).
    pub fn on_gpu(&self, gpu: &Gpu) -> Result<InUse<'_, ClipTextModel>, PipelineError> {
        Ok(self.model.on_gpu(gpu)?)
    }

    /// Whether it waits in host memory between prompts.
    pub fn is_on_host(&self) -> bool {
        self.model.is_on_host()
    }
}

/// Loads the text encoder in `dir` (`text_encoder`, SDXL's `text_encoder_2`) as `precision`
/// says: on the GPU, or kept in host memory. Every key must be used (position ids excepted).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn load_text_encoder<F: ModelFiles, C: QuantCache>(
    gpu: &Gpu,
    files: &F,
    cache: &C,
    dir: &str,
    config: ClipTextConfig,
    precision: Precision,
    merge: Option<LoraMerge>,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<TextEncoder, PipelineError> {
    // Text encoders stay int8 under a 4-bit policy (QuantPolicy::for_text_encoder).
    let policy = precision.weights.for_text_encoder();
    let dtype = precision.activations;
    let on_host = precision.text_encoders == TextEncoders::Host;
    let names = ["model.safetensors", "model.fp16.safetensors"];
    let store =
        load_weights(gpu, files, cache, policy, dir, &names, merge.clone(), on_host, progress).await?;
    let cfg = config.clone();
    let build = move |vb: &darkroom_models::Vb| ClipTextModel::load(vb, &cfg);
    let model =
        Held::load(gpu, store, (dtype, policy), build, |k: &str| k.ends_with("position_ids"), on_host)?;
    if let Some(merge) = &merge {
        merge.require_all_applied()?;
    }
    Ok(TextEncoder { config, model })
}

/// SDXL's second tokenizer and text encoder (OpenCLIP bigG with its projection), and how its
/// pipeline conditions.
pub struct SdxlText {
    pub tokenizer: ClipTokenizer,
    pub clip: TextEncoder,
    /// model_index.json's `force_zeros_for_empty_prompt`: an empty negative prompt conditions
    /// on zeros (diffusers' behaviour when no negative prompt is given), not on the encoded
    /// empty string.
    pub force_zeros_for_empty_prompt: bool,
}
