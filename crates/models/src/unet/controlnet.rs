//! diffusers' `ControlNetModel`: a copy of the UNet's encoder (time embedding, conv_in, down
//! blocks, mid block) whose input also takes a control image through a small convolutional
//! embedding, and whose skip outputs and mid output leave through 1x1 "zero" convolutions as
//! residuals for the UNet's skips ([`ControlResiduals`]).

use darkroom_gpu::ops::{self, Unary};
use darkroom_gpu::{Gpu, Tensor};

use super::{check_input, Encoder, UNetInput};
use crate::config::ControlNetConfig;
use crate::loader::{ConvLayer, ModelError, Vb};

/// One ControlNet evaluation's residuals (already scaled), owned.
pub struct ControlOutput {
    pub down: Vec<Tensor>,
    pub mid: Tensor,
}

impl ControlOutput {
    /// Borrowed for [`super::UNetInput::control`].
    pub fn residuals(&self) -> super::ControlResiduals<'_> {
        super::ControlResiduals { down: &self.down, mid: &self.mid }
    }

    /// Several ControlNets' residuals summed, as diffusers' MultiControlNetModel does.
    pub fn sum(gpu: &Gpu, outputs: Vec<ControlOutput>) -> Result<Option<ControlOutput>, ModelError> {
        let mut iter = outputs.into_iter();
        let Some(mut total) = iter.next() else { return Ok(None) };
        for next in iter {
            if next.down.len() != total.down.len() {
                return Err(ModelError::Input(format!(
                    "ControlNets with {} and {} residuals cannot be combined",
                    total.down.len(),
                    next.down.len()
                )));
            }
            for (t, n) in total.down.iter_mut().zip(&next.down) {
                *t = ops::add(gpu, t, n)?;
            }
            total.mid = ops::add(gpu, &total.mid, &next.mid)?;
        }
        Ok(Some(total))
    }
}

pub struct ControlNetModel {
    config: ControlNetConfig,
    encoder: Encoder,
    cond_in: ConvLayer,
    cond_blocks: Vec<ConvLayer>,
    cond_out: ConvLayer,
    zero_down: Vec<ConvLayer>,
    zero_mid: ConvLayer,
}

impl ControlNetModel {
    pub fn load(vb: &Vb, config: &ControlNetConfig) -> Result<ControlNetModel, ModelError> {
        let cfg = &config.unet;
        let encoder = Encoder::load(vb, cfg)?;
        let ch = &cfg.block_out_channels;
        let stages = &config.conditioning_embedding_out_channels;
        let emb = vb.pp("controlnet_cond_embedding");
        let cond_in =
            ConvLayer::load(&emb.pp("conv_in"), stages[0], config.conditioning_channels, 3, 1, true)?;
        let mut cond_blocks = Vec::new();
        for (i, pair) in stages.windows(2).enumerate() {
            let blocks = emb.pp("blocks");
            cond_blocks.push(ConvLayer::load(&blocks.pp(2 * i), pair[0], pair[0], 3, 1, true)?);
            cond_blocks.push(ConvLayer::load(&blocks.pp(2 * i + 1), pair[1], pair[0], 3, 2, true)?);
        }
        let cond_out = ConvLayer::load(&emb.pp("conv_out"), ch[0], *stages.last().unwrap_or(&0), 3, 1, true)?;

        // One 1x1 convolution per skip connection, with that skip's channels.
        let mut skip_channels = vec![ch[0]];
        for (i, &out) in ch.iter().enumerate() {
            skip_channels.extend(std::iter::repeat_n(out, cfg.layers_per_block));
            if i + 1 < ch.len() {
                skip_channels.push(out);
            }
        }
        debug_assert_eq!(skip_channels.len(), encoder.skip_channels());
        let zero_down = skip_channels
            .iter()
            .enumerate()
            .map(|(i, &c)| ConvLayer::load(&vb.pp("controlnet_down_blocks").pp(i), c, c, 1, 1, true))
            .collect::<Result<_, _>>()?;
        let top = *ch.last().unwrap_or(&0);
        let zero_mid = ConvLayer::load(&vb.pp("controlnet_mid_block"), top, top, 1, 1, true)?;
        Ok(ControlNetModel {
            config: config.clone(),
            encoder,
            cond_in,
            cond_blocks,
            cond_out,
            zero_down,
            zero_mid,
        })
    }

    pub fn config(&self) -> &ControlNetConfig {
        &self.config
    }

    /// The control image [B, conditioning_channels, H, W] (values in [0, 1], channels in the
    /// model's order) through the conditioning embedding → [B, C, H/f, W/f] for
    /// [`ControlNetModel::forward`]. It does not depend on the step, so a pipeline computes it
    /// once per generation.
    pub fn embed_condition(&self, gpu: &Gpu, image: &Tensor) -> Result<Tensor, ModelError> {
        let c = self.config.conditioning_channels;
        if image.shape().len() != 4 || image.shape()[1] != c {
            return Err(ModelError::Input(format!(
                "the control image must be [B, {c}, H, W], got {:?}",
                image.shape()
            )));
        }
        let mut x = ops::unary(gpu, &self.cond_in.forward(gpu, image, None, false)?, Unary::Silu)?;
        for conv in &self.cond_blocks {
            x = ops::unary(gpu, &conv.forward(gpu, &x, None, false)?, Unary::Silu)?;
        }
        Ok(self.cond_out.forward(gpu, &x, None, false)?)
    }

    /// The residuals for the UNet's input (`sample` [B, in_channels, h, w] at `timesteps` with
    /// text `context`, and an SDXL ControlNet's added conditioning; `control` is not read) and
    /// the embedded control image (`condition`, from [`ControlNetModel::embed_condition`],
    /// [B, C, h, w]), each multiplied by `scale` (diffusers' conditioning scale).
    pub fn forward(
        &self,
        gpu: &Gpu,
        input: &UNetInput,
        condition: &Tensor,
        scale: f32,
    ) -> Result<ControlOutput, ModelError> {
        let UNetInput { sample, timesteps, context, added, .. } = *input;
        let cfg = &self.config.unet;
        let (batch, h, w) = check_input(cfg, "ControlNet", sample, timesteps, context)?;
        if condition.shape() != [batch, cfg.block_out_channels[0], h, w] {
            return Err(ModelError::Input(format!(
                "the control image's embedding is {:?} but the latents are {:?}: the control image must be {} times the latents' size",
                condition.shape(),
                sample.shape(),
                self.config.image_factor()
            )));
        }
        let temb = self.encoder.time_embedding(gpu, cfg, timesteps, added.as_ref(), sample.dtype())?;
        let (x, skips) = self.encoder.down(gpu, sample, Some(condition), &temb, context)?;
        let x = self.encoder.mid(gpu, &x, &temb, context)?;
        let scaled = |t: Tensor| -> Result<Tensor, ModelError> {
            Ok(if scale == 1.0 { t } else { ops::lincomb(gpu, &[(scale, &t)])? })
        };
        let down = skips
            .iter()
            .zip(&self.zero_down)
            .map(|(s, conv)| scaled(conv.forward(gpu, s, None, false)?))
            .collect::<Result<_, _>>()?;
        let mid = scaled(self.zero_mid.forward(gpu, &x, None, false)?)?;
        Ok(ControlOutput { down, mid })
    }
}
