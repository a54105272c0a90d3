//! diffusers' `Transformer2DModel` as SD 1.x/2.x/XL use it: group norm, projection in (1x1 conv
//! for SD 1.x, linear for SD 2.x and XL), `BasicTransformerBlock`s (self-attention,
//! cross-attention on the text embeddings, GEGLU feed-forward; SDXL: up to 10, "-small" SDXL
//! ControlNets: none), projection out, plus the input.

use darkroom_gpu::ops::{self, Fused};
use darkroom_gpu::{Gpu, Tensor, Weight};

use crate::layers::GroupNorm;
use crate::loader::{ConvLayer, ModelError, Vb};

struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
}

impl LayerNorm {
    fn load(vb: &Vb, width: usize) -> Result<LayerNorm, ModelError> {
        Ok(LayerNorm { gamma: vb.vector("weight", width)?, beta: vb.vector("bias", width)? })
    }

    fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(ops::layer_norm(gpu, x, &self.gamma, &self.beta, 1e-5)?)
    }
}

/// diffusers' `Attention` in a transformer block: q from the tokens, k and v from the tokens
/// (self) or the text embeddings (cross); no bias on q/k/v, bias on the output projection.
struct Attention {
    to_q: Weight,
    to_k: Weight,
    to_v: Weight,
    to_out: Weight,
    heads: usize,
}

impl Attention {
    fn load(vb: &Vb, width: usize, context_width: usize, heads: usize) -> Result<Attention, ModelError> {
        Ok(Attention {
            to_q: vb.pp("to_q").linear(width, width, false)?,
            to_k: vb.pp("to_k").linear(width, context_width, false)?,
            to_v: vb.pp("to_v").linear(width, context_width, false)?,
            to_out: vb.pp("to_out").pp(0).linear(width, width, true)?,
            heads,
        })
    }

    /// `x` [B, N, C]; `context` [B, M, Cctx] (or `x` itself) → [B, N, C].
    fn forward(&self, gpu: &Gpu, x: &Tensor, context: &Tensor) -> Result<Tensor, ModelError> {
        let q = ops::linear(gpu, x, &self.to_q)?;
        let k = ops::linear(gpu, context, &self.to_k)?;
        let v = ops::linear(gpu, context, &self.to_v)?;
        let a = ops::attention(gpu, &q, &k, &v, self.heads, false)?;
        Ok(ops::linear(gpu, &a, &self.to_out)?)
    }
}

struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_proj: Weight,
    ff_out: Weight,
}

impl BasicTransformerBlock {
    fn load(
        vb: &Vb,
        width: usize,
        context_width: usize,
        heads: usize,
    ) -> Result<BasicTransformerBlock, ModelError> {
        let inner = 4 * width;
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::load(&vb.pp("norm1"), width)?,
            attn1: Attention::load(&vb.pp("attn1"), width, width, heads)?,
            norm2: LayerNorm::load(&vb.pp("norm2"), width)?,
            attn2: Attention::load(&vb.pp("attn2"), width, context_width, heads)?,
            norm3: LayerNorm::load(&vb.pp("norm3"), width)?,
            ff_proj: vb.pp("ff").pp("net").pp(0).pp("proj").linear(2 * inner, width, true)?,
            ff_out: vb.pp("ff").pp("net").pp(2).linear(width, inner, true)?,
        })
    }

    fn forward(&self, gpu: &Gpu, x: &Tensor, context: &Tensor) -> Result<Tensor, ModelError> {
        let h = self.norm1.forward(gpu, x)?;
        let x = ops::add(gpu, x, &self.attn1.forward(gpu, &h, &h)?)?;
        let h = self.norm2.forward(gpu, &x)?;
        let x = ops::add(gpu, &x, &self.attn2.forward(gpu, &h, context)?)?;
        let h = self.norm3.forward(gpu, &x)?;
        let h = ops::geglu(gpu, &ops::linear(gpu, &h, &self.ff_proj)?)?; // [B, N, 4C]
        Ok(ops::add(gpu, &x, &ops::linear(gpu, &h, &self.ff_out)?)?)
    }
}

enum Projection {
    /// SD 1.x: 1x1 convs on [B, C, H, W].
    Conv(ConvLayer),
    /// SD 2.x: linear layers on [B, HW, C].
    Linear(Weight),
}

pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    pub fn load(
        vb: &Vb,
        width: usize,
        context_width: usize,
        heads: usize,
        linear_projection: bool,
        groups: usize,
        depth: usize,
    ) -> Result<Transformer2DModel, ModelError> {
        let projection = |name: &str| -> Result<Projection, ModelError> {
            Ok(if linear_projection {
                Projection::Linear(vb.pp(name).linear(width, width, true)?)
            } else {
                Projection::Conv(ConvLayer::load(&vb.pp(name), width, width, 1, 1, true)?)
            })
        };
        Ok(Transformer2DModel {
            norm: GroupNorm::load(&vb.pp("norm"), groups, width, 1e-6)?,
            proj_in: projection("proj_in")?,
            blocks: (0..depth)
                .map(|i| {
                    BasicTransformerBlock::load(
                        &vb.pp("transformer_blocks").pp(i),
                        width,
                        context_width,
                        heads,
                    )
                })
                .collect::<Result<_, _>>()?,
            proj_out: projection("proj_out")?,
        })
    }

    /// `x` [B, C, H, W], `context` [B, M, Cctx] → [B, C, H, W].
    pub fn forward(&self, gpu: &Gpu, x: &Tensor, context: &Tensor) -> Result<Tensor, ModelError> {
        let [b, c, h, w] = *x.shape() else {
            return Err(ModelError::Input(format!(
                "a transformer block needs [B, C, H, W], got {:?}",
                x.shape()
            )));
        };
        let normed = self.norm.forward(gpu, x, Fused::None)?;
        // To tokens [B, HW, C], projecting before (conv) or after (linear) the transpose.
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => {
                let p = conv.forward(gpu, &normed, None, false)?;
                ops::transpose(gpu, &p.reshape(&[b, c, h * w])?)?
            }
            Projection::Linear(lin) => {
                ops::linear(gpu, &ops::transpose(gpu, &normed.reshape(&[b, c, h * w])?)?, lin)?
            }
        };
        for block in &self.blocks {
            tokens = block.forward(gpu, &tokens, context)?;
        }
        let back = match &self.proj_out {
            Projection::Conv(conv) => {
                let maps = ops::transpose(gpu, &tokens)?.reshape(&[b, c, h, w])?;
                return Ok(conv.forward(gpu, &maps, Some(x), false)?);
            }
            Projection::Linear(lin) => {
                ops::transpose(gpu, &ops::linear(gpu, &tokens, lin)?)?.reshape(&[b, c, h, w])?
            }
        };
        Ok(ops::add(gpu, &back, x)?)
    }
}
