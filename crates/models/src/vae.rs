//! diffusers' `AutoencoderKL`: the encoder to latent moments (img2img, inpainting) and the
//! decoder from latents to RGB. Like diffusers' `encode`/`decode`, these work on unscaled
//! latents: the pipeline multiplies by (or divides by) `scaling_factor`.

use darkroom_gpu::ops::Fused;
use darkroom_gpu::{Gpu, Tensor};
use serde::Deserialize;

use crate::config::ConfigError;
use crate::layers::{Downsample2D, GroupNorm, ResnetBlock2D, SpatialSelfAttention, Upsample2D};
use crate::loader::{ConvLayer, ModelError, Vb};
use crate::tiles::{grid, Tiles};

/// The VAE's norms use eps 1e-6 (diffusers' Encoder/Decoder pass it to every block).
const EPS: f64 = 1e-6;

/// diffusers' `AutoencoderKL` config.json, the fields SD's VAE uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AutoencoderKLConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "sd_scaling")]
    pub scaling_factor: f32,
    /// diffusers' `force_upcast` (default true): SDXL's pipelines run this VAE in f32 when the
    /// rest runs in f16, because its activations overflow f16 (the fp16-fix VAE says false).
    #[serde(default = "yes")]
    pub force_upcast: bool,
}

fn yes() -> bool {
    true
}

fn three() -> usize {
    3
}
fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn sd_scaling() -> f32 {
    0.18215
}

impl AutoencoderKLConfig {
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid { kind: "AutoencoderKL", detail };
        let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        // Per-channel latent statistics (Playground v2.5 and kin) change how latents are scaled:
        // refused by name rather than decoded wrongly.
        for key in ["latents_mean", "latents_std", "shift_factor"] {
            if raw.get(key).is_some_and(|v| !v.is_null()) {
                return Err(ConfigError::Unsupported(format!("a VAE with {key} set: not supported yet")));
            }
        }
        let cfg: Self = serde_json::from_value(raw).map_err(|e| invalid(e.to_string()))?;
        let kind = "AutoencoderKL";
        crate::config::check_sizes(
            kind,
            &[
                ("in_channels", cfg.in_channels),
                ("out_channels", cfg.out_channels),
                ("layers_per_block", cfg.layers_per_block),
                ("latent_channels", cfg.latent_channels),
                ("norm_num_groups", cfg.norm_num_groups),
            ],
        )?;
        crate::config::check_finite(kind, &[("scaling_factor", cfg.scaling_factor as f64)])?;
        for (b, &c) in cfg.block_out_channels.iter().enumerate() {
            crate::config::check_sizes(kind, &[(&format!("block_out_channels[{b}]"), c)])?;
        }
        if cfg.block_out_channels.len() > 8 || cfg.scaling_factor == 0.0 {
            return Err(invalid(format!(
                "{} blocks, scaling factor {}",
                cfg.block_out_channels.len(),
                cfg.scaling_factor
            )));
        }
        if cfg.block_out_channels.is_empty()
            || cfg.block_out_channels.iter().any(|c| c % cfg.norm_num_groups != 0)
        {
            return Err(invalid(format!(
                "block_out_channels {:?} must be non-empty multiples of {} groups",
                cfg.block_out_channels, cfg.norm_num_groups
            )));
        }
        Ok(cfg)
    }

    /// SD 1.x / 2.x's VAE (`vae/config.json` of runwayml/stable-diffusion-v1-5 and
    /// stabilityai/stable-diffusion-2-1).
    pub fn sd() -> Self {
        AutoencoderKLConfig {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            force_upcast: true,
        }
    }

    /// Image size over latent size.
    pub fn scale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// `UNetMidBlock2D` without time embedding: resnet, attention, resnet.
struct MidBlock {
    resnet0: ResnetBlock2D,
    attention: SpatialSelfAttention,
    resnet1: ResnetBlock2D,
}

impl MidBlock {
    fn load(vb: &Vb, channels: usize, groups: usize) -> Result<MidBlock, ModelError> {
        Ok(MidBlock {
            resnet0: ResnetBlock2D::load(&vb.pp("resnets").pp(0), channels, channels, None, groups, EPS)?,
            attention: SpatialSelfAttention::load(&vb.pp("attentions").pp(0), channels, groups, EPS)?,
            resnet1: ResnetBlock2D::load(&vb.pp("resnets").pp(1), channels, channels, None, groups, EPS)?,
        })
    }

    fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, ModelError> {
        let h = self.resnet0.forward(gpu, x, None)?;
        let h = self.attention.forward(gpu, &h)?;
        self.resnet1.forward(gpu, &h, None)
    }
}

/// `count` resnets of a block, the first taking `first_in` channels, all giving `out`.
fn load_resnets(
    block: &Vb,
    count: usize,
    first_in: usize,
    out: usize,
    groups: usize,
) -> Result<Vec<ResnetBlock2D>, ModelError> {
    (0..count)
        .map(|j| {
            ResnetBlock2D::load(
                &block.pp("resnets").pp(j),
                if j == 0 { first_in } else { out },
                out,
                None,
                groups,
                EPS,
            )
        })
        .collect()
}

/// A down or up block: resnets, then an optional resampler.
struct Stage<S> {
    resnets: Vec<ResnetBlock2D>,
    resample: Option<S>,
}

pub struct VaeEncoder {
    config: AutoencoderKLConfig,
    conv_in: ConvLayer,
    down_blocks: Vec<Stage<Downsample2D>>,
    mid_block: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: ConvLayer,
    quant_conv: ConvLayer,
}

impl VaeEncoder {
    /// Loads `encoder.*` and `quant_conv.*`.
    pub fn load(vb: &Vb, config: &AutoencoderKLConfig) -> Result<VaeEncoder, ModelError> {
        let (ch, groups) = (&config.block_out_channels, config.norm_num_groups);
        let enc = vb.pp("encoder");
        let mut down_blocks = Vec::new();
        let mut prev = ch[0];
        for (i, &out) in ch.iter().enumerate() {
            let block = enc.pp("down_blocks").pp(i);
            let resnets = load_resnets(&block, config.layers_per_block, prev, out, groups)?;
            let last = i + 1 == ch.len();
            let resample = if last {
                None
            } else {
                Some(Downsample2D::load(&block.pp("downsamplers").pp(0), out, true)?)
            };
            down_blocks.push(Stage { resnets, resample });
            prev = out;
        }
        let top = *ch.last().unwrap_or(&0);
        let latent2 = 2 * config.latent_channels;
        Ok(VaeEncoder {
            config: config.clone(),
            conv_in: ConvLayer::load(&enc.pp("conv_in"), ch[0], config.in_channels, 3, 1, true)?,
            down_blocks,
            mid_block: MidBlock::load(&enc.pp("mid_block"), top, groups)?,
            conv_norm_out: GroupNorm::load(&enc.pp("conv_norm_out"), groups, top, EPS)?,
            conv_out: ConvLayer::load(&enc.pp("conv_out"), latent2, top, 3, 1, true)?,
            quant_conv: ConvLayer::load(&vb.pp("quant_conv"), latent2, latent2, 1, 1, true)?,
        })
    }

    /// `image` [B, 3, H, W] in [-1, 1] (H, W multiples of the scale) → moments [B, 2L, H/s, W/s]:
    /// the latent distribution's mean in the first L channels, its log-variance in the rest.
    pub fn forward(&self, gpu: &Gpu, image: &Tensor) -> Result<Tensor, ModelError> {
        let s = self.config.scale();
        match *image.shape() {
            [_, c, h, w] if c == self.config.in_channels && h % s == 0 && w % s == 0 && h > 0 && w > 0 => {}
            _ => {
                return Err(ModelError::Input(format!(
                    "the VAE encodes [B, {}, H, W] images with H and W multiples of {s}, got {:?}",
                    self.config.in_channels,
                    image.shape()
                )))
            }
        }
        let mut x = self.conv_in.forward(gpu, image, None, false)?;
        for stage in &self.down_blocks {
            for resnet in &stage.resnets {
                x = resnet.forward(gpu, &x, None)?;
            }
            if let Some(down) = &stage.resample {
                x = down.forward(gpu, &x)?;
            }
        }
        let x = self.mid_block.forward(gpu, &x)?;
        let x = self.conv_norm_out.forward(gpu, &x, Fused::Silu)?;
        let x = self.conv_out.forward(gpu, &x, None, false)?;
        Ok(self.quant_conv.forward(gpu, &x, None, false)?)
    }
}

pub struct VaeDecoder {
    config: AutoencoderKLConfig,
    post_quant_conv: ConvLayer,
    conv_in: ConvLayer,
    mid_block: MidBlock,
    up_blocks: Vec<Stage<Upsample2D>>,
    conv_norm_out: GroupNorm,
    conv_out: ConvLayer,
}

impl VaeDecoder {
    /// Loads `post_quant_conv.*` and `decoder.*`.
    pub fn load(vb: &Vb, config: &AutoencoderKLConfig) -> Result<VaeDecoder, ModelError> {
        let (ch, groups) = (&config.block_out_channels, config.norm_num_groups);
        let dec = vb.pp("decoder");
        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let top = reversed[0];
        let mut up_blocks = Vec::new();
        let mut prev = top;
        for (i, &out) in reversed.iter().enumerate() {
            let block = dec.pp("up_blocks").pp(i);
            let resnets = load_resnets(&block, config.layers_per_block + 1, prev, out, groups)?;
            let last = i + 1 == reversed.len();
            let resample =
                if last { None } else { Some(Upsample2D::load(&block.pp("upsamplers").pp(0), out)?) };
            up_blocks.push(Stage { resnets, resample });
            prev = out;
        }
        let latent = config.latent_channels;
        Ok(VaeDecoder {
            config: config.clone(),
            post_quant_conv: ConvLayer::load(&vb.pp("post_quant_conv"), latent, latent, 1, 1, true)?,
            conv_in: ConvLayer::load(&dec.pp("conv_in"), top, latent, 3, 1, true)?,
            mid_block: MidBlock::load(&dec.pp("mid_block"), top, groups)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(&dec.pp("conv_norm_out"), groups, ch[0], EPS)?,
            conv_out: ConvLayer::load(&dec.pp("conv_out"), config.out_channels, ch[0], 3, 1, true)?,
        })
    }

    /// `latents` [B, L, h, w] (unscaled) → RGB [B, 3, h·s, w·s], about [-1, 1].
    pub fn forward(&self, gpu: &Gpu, latents: &Tensor) -> Result<Tensor, ModelError> {
        match *latents.shape() {
            [_, c, h, w] if c == self.config.latent_channels && h > 0 && w > 0 => {}
            _ => {
                return Err(ModelError::Input(format!(
                    "the VAE decodes [B, {}, h, w] latents, got {:?}",
                    self.config.latent_channels,
                    latents.shape()
                )))
            }
        }
        let x = self.post_quant_conv.forward(gpu, latents, None, false)?;
        let x = self.conv_in.forward(gpu, &x, None, false)?;
        let mut x = self.mid_block.forward(gpu, &x)?;
        for stage in &self.up_blocks {
            for resnet in &stage.resnets {
                x = resnet.forward(gpu, &x, None)?;
            }
            if let Some(up) = &stage.resample {
                x = up.forward(gpu, &x)?;
            }
        }
        let x = self.conv_norm_out.forward(gpu, &x, Fused::Silu)?;
        Ok(self.conv_out.forward(gpu, &x, None, false)?)
    }

    /// [`VaeDecoder::forward`] of one image with the up blocks run tile by tile: `tile` latent
    /// pixels square (`tile`·2^k at the k-th up block). The mid block (its attention sees the
    /// whole latent) runs whole at latent size; above it, each level's activations are held as
    /// one tensor per tile, each tile is computed from its neighbours' borders, and every group
    /// norm takes the whole image's statistics — so the image equals the untiled decode's up to
    /// rounding, while no activation larger than a tile (plus its border) is ever made besides
    /// the tiles themselves.
    pub fn forward_tiled(&self, gpu: &Gpu, latents: &Tensor, tile: usize) -> Result<Tensor, ModelError> {
        let (h, w) = match *latents.shape() {
            [1, c, h, w] if c == self.config.latent_channels && h > 0 && w > 0 => (h, w),
            _ => {
                return Err(ModelError::Input(format!(
                    "the tiled VAE decode takes one [1, {}, h, w] latent, got {:?}",
                    self.config.latent_channels,
                    latents.shape()
                )))
            }
        };
        if tile == 0 {
            return Err(ModelError::Input("the VAE decode's tile must be at least 1 latent pixel".into()));
        }
        let x = self.post_quant_conv.forward(gpu, latents, None, false)?;
        let x = self.conv_in.forward(gpu, &x, None, false)?;
        let x = self.mid_block.forward(gpu, &x)?;
        let mut x = Tiles::whole(&x)?;
        // Between layers, the buffers of the layer before (other sizes than the next one's)
        // leave the GPU: submitted, then dropped from the pool rather than kept for reuse, so
        // the decode holds the live maps and one layer's working buffers, not every size it met.
        let settle = || {
            gpu.flush();
            gpu.trim_pool();
        };
        let mut scale = 1;
        for stage in &self.up_blocks {
            let rects: Vec<_> = grid(h, w, tile).iter().map(|r| r.scaled(scale)).collect();
            for resnet in &stage.resnets {
                x = resnet.forward_tiles(gpu, x, &rects)?;
                settle();
            }
            if let Some(up) = &stage.resample {
                scale *= 2;
                let rects: Vec<_> = grid(h, w, tile).iter().map(|r| r.scaled(scale)).collect();
                x = up.forward_tiles(gpu, &x, &rects)?;
                settle();
            }
        }
        let stats = self.conv_norm_out.stats(gpu, &x)?;
        let out =
            darkroom_gpu::ops::region::blank(gpu, &[1, self.config.out_channels, x.height, x.width], x.dtype);
        for (rect, _) in &x.parts {
            let (t, padding) = x.gather(gpu, *rect, 1, 1)?;
            let t = self.conv_norm_out.apply(gpu, &stats, &t, Fused::Silu)?;
            let geometry = darkroom_gpu::ops::Conv2d { kernel: (3, 3), stride: 1, padding };
            let rgb = darkroom_gpu::ops::conv2d(gpu, &t, &self.conv_out.weight, geometry, None)?;
            let region = darkroom_gpu::ops::Region {
                src_y: 0,
                src_x: 0,
                dst_y: rect.y0,
                dst_x: rect.x0,
                h: rect.height(),
                w: rect.width(),
                scale: 1,
            };
            darkroom_gpu::ops::copy_region(gpu, &rgb, &out, region)?;
        }
        Ok(out)
    }
}
