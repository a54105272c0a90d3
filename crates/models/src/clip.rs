//! CLIP's text encoder (transformers' `CLIPTextModel`), the `last_hidden_state` Stable Diffusion
//! conditions on: token + position embeddings, pre-norm transformer layers with causal
//! self-attention, a final layer norm. SD 1.x uses quick-GELU, SD 2.x GELU; SD 2.x's
//! penultimate-layer convention is in its checkpoint (23 of 24 layers), not in this code.
//! SDXL reads the penultimate layer's states of both its encoders and the pooled, projected
//! end-token state of the second (`CLIPTextModelWithProjection`): [`ClipTextModel::forward_sdxl`].

use darkroom_gpu::ops::{self, Unary};
use darkroom_gpu::{Gpu, Tensor, Weight};

use crate::config::ClipTextConfig;
use crate::loader::{ModelError, Vb};

pub(crate) struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub(crate) fn load(vb: &Vb, width: usize, eps: f64) -> Result<LayerNorm, ModelError> {
        Ok(LayerNorm { gamma: vb.vector("weight", width)?, beta: vb.vector("bias", width)?, eps: eps as f32 })
    }

    pub(crate) fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(ops::layer_norm(gpu, x, &self.gamma, &self.beta, self.eps)?)
    }
}

pub(crate) struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Weight,
    k_proj: Weight,
    v_proj: Weight,
    out_proj: Weight,
    layer_norm2: LayerNorm,
    fc1: Weight,
    fc2: Weight,
}

impl EncoderLayer {
    fn load(vb: &Vb, cfg: &ClipTextConfig) -> Result<EncoderLayer, ModelError> {
        Self::load_sized(vb, cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps)
    }

    /// A layer `d` wide with an `ff`-wide MLP (the text and vision towers share the layout).
    pub(crate) fn load_sized(vb: &Vb, d: usize, ff: usize, eps: f64) -> Result<EncoderLayer, ModelError> {
        let attn = vb.pp("self_attn");
        Ok(EncoderLayer {
            layer_norm1: LayerNorm::load(&vb.pp("layer_norm1"), d, eps)?,
            q_proj: attn.pp("q_proj").linear(d, d, true)?,
            k_proj: attn.pp("k_proj").linear(d, d, true)?,
            v_proj: attn.pp("v_proj").linear(d, d, true)?,
            out_proj: attn.pp("out_proj").linear(d, d, true)?,
            layer_norm2: LayerNorm::load(&vb.pp("layer_norm2"), d, eps)?,
            fc1: vb.pp("mlp").pp("fc1").linear(ff, d, true)?,
            fc2: vb.pp("mlp").pp("fc2").linear(d, ff, true)?,
        })
    }

    fn forward(&self, gpu: &Gpu, x: &Tensor, heads: usize, act: Unary) -> Result<Tensor, ModelError> {
        self.forward_masked(gpu, x, heads, act, true)
    }

    /// `causal`: the text tower's mask; the vision tower attends everywhere.
    pub(crate) fn forward_masked(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        heads: usize,
        act: Unary,
        causal: bool,
    ) -> Result<Tensor, ModelError> {
        let h = self.layer_norm1.forward(gpu, x)?; // [B, T, D]
        let q = ops::linear(gpu, &h, &self.q_proj)?;
        let k = ops::linear(gpu, &h, &self.k_proj)?;
        let v = ops::linear(gpu, &h, &self.v_proj)?;
        let a = ops::attention(gpu, &q, &k, &v, heads, causal)?;
        let x = ops::add(gpu, x, &ops::linear(gpu, &a, &self.out_proj)?)?;
        let h = self.layer_norm2.forward(gpu, &x)?;
        let h = ops::unary(gpu, &ops::linear(gpu, &h, &self.fc1)?, act)?; // [B, T, FF]
        Ok(ops::add(gpu, &x, &ops::linear(gpu, &h, &self.fc2)?)?)
    }
}

pub struct ClipTextModel {
    config: ClipTextConfig,
    token_embedding: Weight,
    position_embedding: Tensor,
    /// The position table on the CPU, for rows an embedding's vectors replace.
    position_values: Vec<f32>,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    /// CLIPTextModelWithProjection's `text_projection` (no bias), applied to the pooled row.
    text_projection: Option<Weight>,
}

/// What SDXL conditions on, per sequence.
pub struct SdxlTextOutput {
    /// [batch, seq_len, D]: the penultimate layer's output, before the final layer norm
    /// (`hidden_states[-2]`).
    pub penultimate: Tensor,
    /// [batch, projection_dim]: the final-normed state at the end token, projected
    /// (`text_embeds`), when the model has a projection.
    pub pooled: Option<Tensor>,
}

impl ClipTextModel {
    /// Loads from `text_model.*` (transformers 4 checkpoints, as in SD repositories) or from the
    /// root (transformers 5 writes the keys without the prefix).
    pub fn load(vb: &Vb, config: &ClipTextConfig) -> Result<ClipTextModel, ModelError> {
        let root = vb.clone();
        let vb = if vb.contains("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb.clone()
        };
        let d = config.hidden_size;
        let emb = vb.pp("embeddings");
        let tokens = emb.pp("token_embedding").values("weight", &[config.vocab_size, d])?;
        let positions =
            emb.pp("position_embedding").values("weight", &[config.max_position_embeddings, d])?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| EncoderLayer::load(&vb.pp("encoder").pp("layers").pp(i), config))
            .collect::<Result<_, _>>()?;
        Ok(ClipTextModel {
            config: config.clone(),
            // The table is looked up, not multiplied: keep it f16 (101 MB for SD 2's, under the
            // 128 MiB binding default), whatever the policy for linear layers.
            token_embedding: Weight::from_f32(
                vb.gpu,
                config.vocab_size,
                d,
                &tokens,
                None,
                darkroom_gpu::WeightFormat::F16,
            )?,
            position_embedding: Tensor::from_f32(
                vb.gpu,
                &[config.max_position_embeddings, d],
                &positions,
                vb.dtype,
            )?,
            position_values: positions,
            layers,
            final_layer_norm: LayerNorm::load(&vb.pp("final_layer_norm"), d, config.layer_norm_eps)?,
            text_projection: match config.projection_dim {
                Some(p) if root.contains("text_projection.weight") => {
                    Some(root.pp("text_projection").linear(p, d, false)?)
                }
                _ => None,
            },
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    fn check_ids(&self, ids: &[u32], seq_len: usize) -> Result<(), ModelError> {
        if seq_len == 0 || seq_len > self.config.max_position_embeddings || ids.len() % seq_len != 0 {
            return Err(ModelError::Input(format!(
                "CLIP encodes whole sequences of up to {} tokens, got {} ids in sequences of {seq_len}",
                self.config.max_position_embeddings,
                ids.len()
            )));
        }
        Ok(())
    }

    /// The token + position embeddings of ids inside the vocabulary.
    fn embed_known(&self, gpu: &Gpu, ids: &[u32], seq_len: usize) -> Result<Tensor, ModelError> {
        self.check_ids(ids, seq_len)?;
        Ok(ops::embed_tokens(gpu, ids, seq_len, &self.token_embedding, &self.position_embedding)?)
    }

    /// The token + position embeddings of `ids`. Ids from `vocab_size` on are rows of `extra`
    /// (textual-inversion vectors, `extra` holding hidden-size rows in order): their rows are put
    /// in on the CPU, as a tokenizer with added tokens and a resized table would give.
    async fn embed(
        &self,
        gpu: &Gpu,
        ids: &[u32],
        seq_len: usize,
        extra: &[f32],
    ) -> Result<Tensor, ModelError> {
        let vocab = self.config.vocab_size as u32;
        if ids.iter().all(|&id| id < vocab) {
            return self.embed_known(gpu, ids, seq_len);
        }
        let d = self.config.hidden_size;
        let known: Vec<u32> = ids.iter().map(|&id| if id < vocab { id } else { 0 }).collect();
        let x = self.embed_known(gpu, &known, seq_len)?;
        let mut values = x.read_f32(gpu).await?;
        for (i, &id) in ids.iter().enumerate().filter(|(_, &id)| id >= vocab) {
            let row = (id - vocab) as usize;
            let vector = extra.get(row * d..(row + 1) * d).ok_or_else(|| {
                ModelError::Input(format!(
                    "token {id} is past the vocabulary and the {} extra vectors",
                    extra.len() / d
                ))
            })?;
            let position = &self.position_values[(i % seq_len) * d..(i % seq_len + 1) * d];
            for (k, v) in values[i * d..(i + 1) * d].iter_mut().enumerate() {
                *v = vector[k] + position[k];
            }
        }
        Ok(Tensor::from_f32(gpu, x.shape(), &values, x.dtype())?)
    }

    /// The first `layers` encoder layers over embedded tokens.
    fn run_layers(&self, gpu: &Gpu, mut x: Tensor, layers: usize) -> Result<Tensor, ModelError> {
        let act = if self.config.hidden_act == "quick_gelu" { Unary::QuickGelu } else { Unary::Gelu };
        for layer in &self.layers[..layers] {
            x = layer.forward(gpu, &x, self.config.num_attention_heads, act)?;
        }
        Ok(x)
    }

    /// `ids` [batch, seq_len] (row-major, seq_len ≤ 77) → last_hidden_state [batch, seq_len, D].
    pub fn forward(&self, gpu: &Gpu, ids: &[u32], seq_len: usize) -> Result<Tensor, ModelError> {
        if ids.iter().any(|&id| id as usize >= self.config.vocab_size) {
            return Err(ModelError::Input("token ids past the vocabulary need forward_extended".into()));
        }
        let x = self.embed_known(gpu, ids, seq_len)?;
        let x = self.run_layers(gpu, x, self.layers.len())?;
        self.final_layer_norm.forward(gpu, &x)
    }

    /// As [`ClipTextModel::forward`], with ids from `vocab_size` on taken from `extra`'s rows
    /// (textual-inversion vectors).
    pub async fn forward_extended(
        &self,
        gpu: &Gpu,
        ids: &[u32],
        seq_len: usize,
        extra: &[f32],
    ) -> Result<Tensor, ModelError> {
        let x = self.embed(gpu, ids, seq_len, extra).await?;
        let x = self.run_layers(gpu, x, self.layers.len())?;
        self.final_layer_norm.forward(gpu, &x)
    }

    /// The position transformers pools each sequence at: with the legacy eos id 2, the largest
    /// id's first position; otherwise the first end token's (0 when there is none).
    pub fn pooled_positions(&self, ids: &[u32], seq_len: usize) -> Vec<usize> {
        ids.chunks(seq_len)
            .map(|row| {
                if self.config.eos_token_id == 2 {
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&id| id == max).unwrap_or(0)
                } else {
                    row.iter().position(|&id| id == self.config.eos_token_id).unwrap_or(0)
                }
            })
            .collect()
    }

    /// SDXL's use of an encoder: the penultimate layer's states, and (with a projection) the
    /// pooled projection of the last layer's. `with_pooled` false skips the last layer.
    /// Ids from `vocab_size` on are `extra`'s rows (textual-inversion vectors).
    pub async fn forward_sdxl(
        &self,
        gpu: &Gpu,
        ids: &[u32],
        seq_len: usize,
        with_pooled: bool,
        extra: &[f32],
    ) -> Result<SdxlTextOutput, ModelError> {
        let n = self.layers.len();
        if n < 2 {
            return Err(ModelError::Input(
                "SDXL conditions on the penultimate layer: the encoder has one".into(),
            ));
        }
        let penultimate = self.run_layers(gpu, self.embed(gpu, ids, seq_len, extra).await?, n - 1)?;
        let pooled = match (&self.text_projection, with_pooled) {
            (Some(projection), true) => {
                let act = if self.config.hidden_act == "quick_gelu" { Unary::QuickGelu } else { Unary::Gelu };
                let last =
                    self.layers[n - 1].forward(gpu, &penultimate, self.config.num_attention_heads, act)?;
                let last = self.final_layer_norm.forward(gpu, &last)?;
                // One row per sequence: gathered on the CPU (a few KB per sequence, once per prompt).
                let d = self.config.hidden_size;
                let values = last.read_f32(gpu).await?;
                let rows: Vec<f32> = self
                    .pooled_positions(ids, seq_len)
                    .iter()
                    .enumerate()
                    .flat_map(|(b, &p)| values[(b * seq_len + p) * d..(b * seq_len + p + 1) * d].to_vec())
                    .collect();
                let batch = ids.len() / seq_len;
                let rows = Tensor::from_f32(gpu, &[batch, d], &rows, penultimate.dtype())?;
                Some(ops::linear(gpu, &rows, projection)?)
            }
            (None, true) => {
                return Err(ModelError::Input(
                    "this text encoder has no text_projection (SDXL's second encoder needs one)".into(),
                ))
            }
            (_, false) => None,
        };
        Ok(SdxlTextOutput { penultimate, pooled })
    }
}
