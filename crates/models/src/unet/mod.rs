//! diffusers' `UNet2DConditionModel` for SD 1.x / 2.x / XL (and their 9-channel inpainting
//! variants), driven by its config: time embedding (plus SDXL's text_time added conditioning),
//! down blocks that keep skip outputs, a cross-attention mid block, up blocks that concatenate
//! those skips, and the output head. Attention only where the block types say so, each
//! attention layer as many transformer blocks deep as `transformer_layers_per_block` says.

pub mod controlnet;
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

/// SDXL's added conditioning (diffusers' `added_cond_kwargs`).
#[derive(Clone, Copy)]
pub struct AddedConditions<'a> {
    /// [B, P]: the second text encoder's pooled, projected embedding.
    pub text_embeds: &'a Tensor,
    /// Six per batch entry: original height and width, crop top and left, target height and
    /// width.
    pub time_ids: &'a [f32],
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
    /// SDXL's pooled text embedding and time ids.
    pub added: Option<AddedConditions<'a>>,
}

/// The time embedding, `conv_in`, the down blocks and the mid block: the part of the UNet a
/// ControlNet copies (same keys, same config fields), loaded and run by one piece of code.
pub(crate) struct Encoder {
    linear_1: Weight,
    linear_2: Weight,
    /// SDXL's `add_embedding` (linear_1, linear_2) for the text_time conditioning.
    add_embedding: Option<(Weight, Weight)>,
    conv_in: ConvLayer,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
}

/// Resnet `j` of a block (and its transformer when the block has cross-attention).
/// `attention`: the heads and transformer depth of a cross-attention block's layers.
fn load_layer(
    cfg: &UNet2DConditionConfig,
    block: &Vb,
    j: usize,
    input: usize,
    out: usize,
    attention: Option<(usize, usize)>,
) -> Result<Layer, ModelError> {
    let temb = 4 * cfg.block_out_channels[0];
    Ok(Layer {
        resnet: ResnetBlock2D::load(
            &block.pp("resnets").pp(j),
            input,
            out,
            Some(temb),
            cfg.norm_num_groups,
            cfg.norm_eps,
        )?,
        attention: match attention {
            Some((heads, depth)) => {
                Some(load_attention(cfg, &block.pp("attentions").pp(j), out, heads, depth)?)
            }
            None => None,
        },
    })
}

fn load_attention(
    cfg: &UNet2DConditionConfig,
    vb: &Vb,
    width: usize,
    heads: usize,
    depth: usize,
) -> Result<Transformer2DModel, ModelError> {
    Transformer2DModel::load(
        vb,
        width,
        cfg.cross_attention_dim,
        heads,
        cfg.use_linear_projection,
        cfg.norm_num_groups,
        depth,
    )
}

impl Encoder {
    pub(crate) fn load(vb: &Vb, cfg: &UNet2DConditionConfig) -> Result<Encoder, ModelError> {
        let ch = &cfg.block_out_channels;
        let (groups, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        let temb = 4 * ch[0];
        let mut down_blocks = Vec::new();
        let mut prev = ch[0];
        for (i, &out) in ch.iter().enumerate() {
            let vb = vb.pp("down_blocks").pp(i);
            let cross = has_cross_attention(&cfg.down_block_types[i]);
            let attention = cross.then(|| (cfg.heads(i), cfg.transformer_depth(i)));
            let layers = (0..cfg.layers_per_block)
                .map(|j| load_layer(cfg, &vb, j, if j == 0 { prev } else { out }, out, attention))
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
            attention: load_attention(
                cfg,
                &mid.pp("attentions").pp(0),
                top,
                cfg.heads(ch.len() - 1),
                cfg.transformer_depth(ch.len() - 1),
            )?,
            resnet1: ResnetBlock2D::load(&mid.pp("resnets").pp(1), top, top, Some(temb), groups, eps)?,
        };
        let te = vb.pp("time_embedding");
        let add_embedding =
            match cfg.projection_class_embeddings_input_dim.filter(|_| cfg.text_time().is_some()) {
                Some(input) => {
                    let add = vb.pp("add_embedding");
                    Some((
                        add.pp("linear_1").linear(temb, input, true)?,
                        add.pp("linear_2").linear(temb, temb, true)?,
                    ))
                }
                None => None,
            };
        Ok(Encoder {
            linear_1: te.pp("linear_1").linear(temb, ch[0], true)?,
            linear_2: te.pp("linear_2").linear(temb, temb, true)?,
            add_embedding,
            conv_in: ConvLayer::load(&vb.pp("conv_in"), ch[0], cfg.in_channels, 3, 1, true)?,
            down_blocks,
            mid_block,
        })
    }

    /// The skip connections each down block makes, in order (conv_in's output first).
    pub(crate) fn skip_channels(&self) -> usize {
        1 + self.down_blocks.iter().map(|b| b.layers.len() + b.downsample.is_some() as usize).sum::<usize>()
    }

    /// SiLU of the time embedding (every resnet's input): sinusoidal on the CPU (see
    /// ops::timestep_embedding), then two linears; with SDXL's text_time conditioning, plus the
    /// embedding of the pooled text embedding and the sinusoidal time ids, as diffusers.
    pub(crate) fn time_embedding(
        &self,
        gpu: &Gpu,
        cfg: &UNet2DConditionConfig,
        timesteps: &[f32],
        added: Option<&AddedConditions>,
        dtype: darkroom_gpu::DType,
    ) -> Result<Tensor, ModelError> {
        let base = cfg.block_out_channels[0];
        let emb = ops::timestep_embedding(timesteps, base, cfg.flip_sin_to_cos, cfg.freq_shift as f32);
        let emb = Tensor::from_f32(gpu, &[timesteps.len(), base], &emb, dtype)?;
        let emb = ops::unary(gpu, &ops::linear(gpu, &emb, &self.linear_1)?, Unary::Silu)?;
        let mut emb = ops::linear(gpu, &emb, &self.linear_2)?;
        match (&self.add_embedding, cfg.text_time(), added) {
            (Some((linear_1, linear_2)), Some((pooled, time_dim)), Some(added)) => {
                let rows = timesteps.len();
                if added.text_embeds.shape() != [rows, pooled] || added.time_ids.len() != rows * 6 {
                    return Err(ModelError::Input(format!(
                        "this UNet's added conditioning is [{rows}, {pooled}] text embeddings and {} time ids, got {:?} and {}",
                        rows * 6,
                        added.text_embeds.shape(),
                        added.time_ids.len()
                    )));
                }
                let ids = ops::timestep_embedding(
                    added.time_ids,
                    time_dim,
                    cfg.flip_sin_to_cos,
                    cfg.freq_shift as f32,
                );
                let ids = Tensor::from_f32(gpu, &[rows, 6 * time_dim], &ids, dtype)?;
                let input = ops::concat(gpu, added.text_embeds, &ids, 1)?;
                let aug = ops::unary(gpu, &ops::linear(gpu, &input, linear_1)?, Unary::Silu)?;
                emb = ops::add(gpu, &emb, &ops::linear(gpu, &aug, linear_2)?)?;
            }
            (None, _, None) => {}
            (Some(_), _, None) => {
                return Err(ModelError::Input(
                    "this SDXL UNet needs the pooled text embeddings and time ids (added conditioning)"
                        .into(),
                ))
            }
            (_, _, Some(_)) => {
                return Err(ModelError::Input("this UNet takes no added conditioning".into()));
            }
        }
        Ok(ops::unary(gpu, &emb, Unary::Silu)?)
    }

    /// conv_in (plus `added`, a ControlNet's conditioning embedding) and the down blocks: the
    /// last block's output and every skip connection.
    pub(crate) fn down(
        &self,
        gpu: &Gpu,
        sample: &Tensor,
        added: Option<&Tensor>,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>), ModelError> {
        let mut x = self.conv_in.forward(gpu, sample, added, false)?;
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            for layer in &block.layers {
                x = layer.forward(gpu, &x, temb, context)?;
                skips.push(x.clone());
            }
            if let Some(down) = &block.downsample {
                x = down.forward(gpu, &x)?;
                skips.push(x.clone());
            }
        }
        Ok((x, skips))
    }

    pub(crate) fn mid(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<Tensor, ModelError> {
        let m = &self.mid_block;
        let x = m.resnet0.forward(gpu, x, Some(temb))?;
        let x = m.attention.forward(gpu, &x, context)?;
        m.resnet1.forward(gpu, &x, Some(temb))
    }
}

/// Checks a UNet or ControlNet input: [B, in_channels, h, w] latents of a positive size, one
/// timestep and one context row per batch entry.
pub(crate) fn check_input(
    cfg: &UNet2DConditionConfig,
    what: &str,
    sample: &Tensor,
    timesteps: &[f32],
    context: &Tensor,
) -> Result<(usize, usize, usize), ModelError> {
    let [batch, c, h, w] = *sample.shape() else {
        return Err(ModelError::Input(format!(
            "the {what} takes [B, C, h, w] latents, got {:?}",
            sample.shape()
        )));
    };
    if c != cfg.in_channels || h == 0 || w == 0 {
        return Err(ModelError::Input(format!(
            "this {what} takes [B, {}, h, w] latents, got {:?}",
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
    Ok((batch, h, w))
}

pub struct UNet2DConditionModel {
    config: UNet2DConditionConfig,
    encoder: Encoder,
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
        let encoder = Encoder::load(vb, cfg)?;
        let top = *ch.last().unwrap_or(&0);
        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut prev_out = top;
        for (i, &out) in reversed.iter().enumerate() {
            let vb = vb.pp("up_blocks").pp(i);
            let block_index = ch.len() - 1 - i; // the down block this one mirrors
            let skip_in = reversed[(i + 1).min(reversed.len() - 1)];
            let cross = has_cross_attention(&cfg.up_block_types[i]);
            let attention = cross.then(|| (cfg.heads(block_index), cfg.transformer_depth(block_index)));
            let layers = (0..=cfg.layers_per_block)
                .map(|j| {
                    let skip = if j == cfg.layers_per_block { skip_in } else { out };
                    let input = if j == 0 { prev_out } else { out };
                    load_layer(cfg, &vb, j, input + skip, out, attention)
                })
                .collect::<Result<_, _>>()?;
            let last = i + 1 == reversed.len();
            let upsample = if last { None } else { Some(Upsample2D::load(&vb.pp("upsamplers").pp(0), out)?) };
            up_blocks.push(UpBlock { layers, upsample });
            prev_out = out;
        }

        Ok(UNet2DConditionModel {
            config: cfg.clone(),
            encoder,
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
        self.forward_input(gpu, &UNetInput { sample, timesteps, context, control: None, added: None })
    }

    /// The forward pass with every optional conditioning bundle (ControlNet residuals, SDXL's
    /// added conditioning), as diffusers' forward takes them.
    pub fn forward_input(&self, gpu: &Gpu, input: &UNetInput) -> Result<Tensor, ModelError> {
        let UNetInput { sample, timesteps, context, control, added } = *input;
        let cfg = &self.config;
        // Any positive size: where a down block halves an odd size (rounding up), the up block
        // resizes to its skip connection's size instead of doubling, as diffusers does.
        check_input(cfg, "UNet", sample, timesteps, context)?;
        let temb = self.encoder.time_embedding(gpu, cfg, timesteps, added.as_ref(), sample.dtype())?;
        let (mut x, mut skips) = self.encoder.down(gpu, sample, None, &temb, context)?;

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

        x = self.encoder.mid(gpu, &x, &temb, context)?;
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
