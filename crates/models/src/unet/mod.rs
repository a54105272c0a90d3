//! diffusers' `UNet2DConditionModel` for SD 1.x / 2.x (and their 9-channel inpainting
//! variants): time embedding, down blocks that keep skip outputs, a cross-attention mid block,
//! up blocks that concatenate those skips, and the output head.

mod transformer;

use darkroom_gpu::ops::{self, Fused, Unary};
use darkroom_gpu::{Gpu, Tensor, Weight};

use crate::config::UNet2DConditionConfig;
use crate::layers::{Downsample2D, GroupNorm, ResnetBlock2D, Upsample2D};
use crate::loader::{ConvLayer, ModelError, Vb};
pub use transformer::Transformer2DModel;

/// A resnet, and in cross-attention blocks the transformer after it. (Resnets use the config's
/// `norm_eps`, 1e-5 for SD; transformer group norms 1e-6.)
struct Layer {
    resnet: ResnetBlock2D,
    attention: Option<Transformer2DModel>,
}

impl Layer {
    fn forward(&self, gpu: &Gpu, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor, ModelError> {
        let h = self.resnet.forward(gpu, x, Some(temb))?;
        match &self.attention {
            Some(attn) => attn.forward(gpu, &h, context),
            None => Ok(h),
        }
    }
}

struct DownBlock {
    layers: Vec<Layer>,
    downsample: Option<Downsample2D>,
}

struct UpBlock {
    layers: Vec<Layer>,
    upsample: Option<Upsample2D>,
}

struct MidBlock {
    resnet0: ResnetBlock2D,
    attention: Transformer2DModel,
    resnet1: ResnetBlock2D,
}

/// ControlNet residuals for the UNet: one per skip connection, in the order the down blocks
/// make them (conv_in's output first), and one for the mid block's output.
#[derive(Clone, Copy)]
pub struct ControlResiduals<'a> {
    pub down: &'a [Tensor],
    pub mid: &'a Tensor,
}

/// Everything one UNet evaluation takes.
#[derive(Clone, Copy)]
pub struct UNetInput<'a> {
    /// [B, in_channels, h, w]
    pub sample: &'a Tensor,
    /// One per batch entry.
    pub timesteps: &'a [f32],
    /// [B, M, D]: the text embeddings.
    pub context: &'a Tensor,
    pub control: Option<ControlResiduals<'a>>,
}

pub struct UNet2DConditionModel {
    config: UNet2DConditionConfig,
    linear_1: Weight,
    linear_2: Weight,
    conv_in: ConvLayer,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: ConvLayer,
}

fn has_cross_attention(block_type: &str) -> bool {
    block_type.starts_with("CrossAttn")
}

impl UNet2DConditionModel {
    pub fn load(vb: &Vb, config: &UNet2DConditionConfig) -> Result<UNet2DConditionModel, ModelError> {
        let cfg = config;
        let ch = &cfg.block_out_channels;
        let (groups, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        let temb = 4 * ch[0];
        let ctx = cfg.cross_attention_dim;
        let attention = |vb: &Vb, width: usize, heads: usize| {
            Transformer2DModel::load(vb, width, ctx, heads, cfg.use_linear_projection, groups)
        };
        // Resnet `j` of a block (and its transformer when the block has cross-attention).
        let layer = |block: &Vb,
                     j: usize,
                     input: usize,
                     out: usize,
                     heads: Option<usize>|
         -> Result<Layer, ModelError> {
            Ok(Layer {
                resnet: ResnetBlock2D::load(&block.pp("resnets").pp(j), input, out, Some(temb), groups, eps)?,
                attention: match heads {
                    Some(h) => Some(attention(&block.pp("attentions").pp(j), out, h)?),
                    None => None,
                },
            })
        };

        let mut down_blocks = Vec::new();
        let mut prev = ch[0];
        for (i, &out) in ch.iter().enumerate() {
            let vb = vb.pp("down_blocks").pp(i);
            let cross = has_cross_attention(&cfg.down_block_types[i]);
            let heads = cross.then(|| cfg.heads(i));
            let layers = (0..cfg.layers_per_block)
                .map(|j| layer(&vb, j, if j == 0 { prev } else { out }, out, heads))
                .collect::<Result<_, _>>()?;
            let last = i + 1 == ch.len();
            let downsample =
                if last { None } else { Some(Downsample2D::load(&vb.pp("downsamplers").pp(0), out, false)?) };
            down_blocks.push(DownBlock { layers, downsample });
            prev = out;
        }

        let top = *ch.last().unwrap_or(&0);
        let mid = vb.pp("mid_block");
        let mid_block = MidBlock {
            resnet0: ResnetBlock2D::load(&mid.pp("resnets").pp(0), top, top, Some(temb), groups, eps)?,
            attention: attention(&mid.pp("attentions").pp(0), top, cfg.heads(ch.len() - 1))?,
            resnet1: ResnetBlock2D::load(&mid.pp("resnets").pp(1), top, top, Some(temb), groups, eps)?,
        };

        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut prev_out = top;
        for (i, &out) in reversed.iter().enumerate() {
            let vb = vb.pp("up_blocks").pp(i);
            let block_index = ch.len() - 1 - i; // the down block this one mirrors
            let skip_in = reversed[(i + 1).min(reversed.len() - 1)];
            let cross = has_cross_attention(&cfg.up_block_types[i]);
            let heads = cross.then(|| cfg.heads(block_index));
            let layers = (0..=cfg.layers_per_block)
                .map(|j| {
                    let skip = if j == cfg.layers_per_block { skip_in } else { out };
                    let input = if j == 0 { prev_out } else { out };
                    layer(&vb, j, input + skip, out, heads)
                })
                .collect::<Result<_, _>>()?;
            let last = i + 1 == reversed.len();
            let upsample = if last { None } else { Some(Upsample2D::load(&vb.pp("upsamplers").pp(0), out)?) };
            up_blocks.push(UpBlock { layers, upsample });
            prev_out = out;
        }

        let te = vb.pp("time_embedding");
        Ok(UNet2DConditionModel {
            config: cfg.clone(),
            linear_1: te.pp("linear_1").linear(temb, ch[0], true)?,
            linear_2: te.pp("linear_2").linear(temb, temb, true)?,
            conv_in: ConvLayer::load(&vb.pp("conv_in"), ch[0], cfg.in_channels, 3, 1, true)?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(&vb.pp("conv_norm_out"), groups, ch[0], eps)?,
            conv_out: ConvLayer::load(&vb.pp("conv_out"), cfg.out_channels, ch[0], 3, 1, true)?,
        })
    }

    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// `sample` [B, in_channels, h, w], one timestep per batch entry, `context` [B, M, D] (the
    /// text embeddings) → the model output [B, out_channels, h, w] (noise or v, per the model).
    pub fn forward(
        &self,
        gpu: &Gpu,
        sample: &Tensor,
        timesteps: &[f32],
        context: &Tensor,
    ) -> Result<Tensor, ModelError> {
        self.forward_input(gpu, &UNetInput { sample, timesteps, context, control: None })
    }

    /// The forward pass with every optional conditioning bundle (ControlNet residuals today;
    /// SDXL's added conditioning will be another field), as diffusers' forward takes them.
    pub fn forward_input(&self, gpu: &Gpu, input: &UNetInput) -> Result<Tensor, ModelError> {
        let UNetInput { sample, timesteps, context, control } = *input;
        let cfg = &self.config;
        let [batch, c, h, w] = *sample.shape() else {
            return Err(ModelError::Input(format!(
                "the UNet takes [B, C, h, w] latents, got {:?}",
                sample.shape()
            )));
        };
        // Any positive size: where a down block halves an odd size (rounding up), the up block
        // resizes to its skip connection's size instead of doubling, as diffusers does.
        if c != cfg.in_channels || h == 0 || w == 0 {
            return Err(ModelError::Input(format!(
                "this UNet takes [B, {}, h, w] latents, got {:?}",
                cfg.in_channels,
                sample.shape()
            )));
        }
        if timesteps.len() != batch || context.shape().first() != Some(&batch) {
            return Err(ModelError::Input(format!(
                "{} timesteps and context {:?} for a batch of {batch}",
                timesteps.len(),
                context.shape()
            )));
        }
        let dtype = sample.dtype();

        // Time embedding: sinusoidal (on the CPU, see ops::timestep_embedding), two linears;
        // every resnet takes SiLU of it.
        let base = cfg.block_out_channels[0];
        let emb = ops::timestep_embedding(timesteps, base, cfg.flip_sin_to_cos, cfg.freq_shift as f32);
        let emb = Tensor::from_f32(gpu, &[batch, base], &emb, dtype)?;
        let emb = ops::unary(gpu, &ops::linear(gpu, &emb, &self.linear_1)?, Unary::Silu)?;
        let temb = ops::unary(gpu, &ops::linear(gpu, &emb, &self.linear_2)?, Unary::Silu)?;

        let mut x = self.conv_in.forward(gpu, sample, None, false)?;
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            for layer in &block.layers {
                x = layer.forward(gpu, &x, &temb, context)?;
                skips.push(x.clone());
            }
            if let Some(down) = &block.downsample {
                x = down.forward(gpu, &x)?;
                skips.push(x.clone());
            }
        }

        if let Some(control) = control {
            // diffusers adds a ControlNet's residuals to every skip connection and to the mid
            // block's output.
            if control.down.len() != skips.len() {
                return Err(ModelError::Input(format!(
                    "{} control residuals for {} skip connections",
                    control.down.len(),
                    skips.len()
                )));
            }
            for (skip, residual) in skips.iter_mut().zip(control.down) {
                *skip = ops::add(gpu, skip, residual)?;
            }
        }

        let m = &self.mid_block;
        x = m.resnet0.forward(gpu, &x, Some(&temb))?;
        x = m.attention.forward(gpu, &x, context)?;
        x = m.resnet1.forward(gpu, &x, Some(&temb))?;
        if let Some(control) = control {
            x = ops::add(gpu, &x, control.mid)?;
        }

        for block in &self.up_blocks {
            for layer in &block.layers {
                let skip =
                    skips.pop().ok_or_else(|| ModelError::Input("UNet skip connections ran out".into()))?;
                x = ops::concat(gpu, &x, &skip, 1)?;
                x = layer.forward(gpu, &x, &temb, context)?;
            }
            if let Some(up) = &block.upsample {
                // The next skip to join has the size this block's output must reach.
                let size = match skips.last().map(|s| s.shape()) {
                    Some(&[_, _, sh, sw]) => (sh, sw),
                    _ => return Err(ModelError::Input("UNet skip connections ran out".into())),
                };
                x = up.forward_to(gpu, &x, size)?;
            }
        }

        let x = self.conv_norm_out.forward(gpu, &x, Fused::Silu)?;
        Ok(self.conv_out.forward(gpu, &x, None, false)?)
    }
}
