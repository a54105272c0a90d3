//! TAESD, the tiny autoencoder (madebyollin/taesd), with configurable latent channels and the
//! "midblock group norm" variant: TAESD for SD 1.x/2.x previews (4 latent channels) and TAEF2
//! for the FLUX.2 latent space (32 channels, group norm in the deepest blocks).
//!
//! Weights are an `nn.Sequential` each, so tensor names are positions: `0.weight`,
//! `1.conv.0.weight`, `11.pool.1.weight`, … The encoder takes RGB in [0, 1] (H and W multiples
//! of 8) to latents at 1/8 resolution; the decoder returns RGB in about [0, 1] (clamp it).

use darkroom_gpu::ops::{self, Fused, Unary};
use darkroom_gpu::{Gpu, GpuError, Tensor, Weight};

use crate::loader::{ConvLayer, ModelError, Vb};

/// Every TAESD layer is 64 channels wide.
const WIDTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaesdConfig {
    pub latent_channels: usize,
    /// `x + pool(x)` (1x1 conv → GroupNorm(4) → ReLU → 1x1 conv) before the deepest blocks.
    pub midblock_group_norm: bool,
}

impl TaesdConfig {
    /// TAESD for SD 1.x / 2.x latents (madebyollin/taesd, `taesd_encoder.pth`/`taesd_decoder.pth`).
    pub const SD: TaesdConfig = TaesdConfig { latent_channels: 4, midblock_group_norm: false };
    /// TAEF2 for FLUX.2 latents (madebyollin/taesd, `taef2_encoder.pth`/`taef2_decoder.pth`).
    pub const TAEF2: TaesdConfig = TaesdConfig { latent_channels: 32, midblock_group_norm: true };
}

/// `x + conv3(relu(groupnorm(conv0(x))))`, widening to 4x the channels inside.
struct Pool {
    expand: Weight,
    norm_gamma: Tensor,
    norm_beta: Tensor,
    shrink: Weight,
}

impl Pool {
    fn load(vb: &Vb) -> Result<Pool, ModelError> {
        let inner = WIDTH * 4;
        Ok(Pool {
            expand: vb.pp(0).conv(inner, WIDTH, 1, false)?,
            norm_gamma: vb.pp(1).vector("weight", inner)?,
            norm_beta: vb.pp(1).vector("bias", inner)?,
            shrink: vb.pp(3).conv(WIDTH, inner, 1, false)?,
        })
    }

    fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, GpuError> {
        let one = ops::Conv2d::same(1);
        let h = ops::conv2d(gpu, x, &self.expand, one, None)?; // [B, 256, H, W]
        let h = ops::group_norm(gpu, &h, 4, &self.norm_gamma, &self.norm_beta, 1e-5, Fused::Relu)?;
        ops::conv2d(gpu, &h, &self.shrink, one, Some(x)) // x + pool(x)
    }
}

/// `relu(conv4(relu(conv2(relu(conv0(x))))) + x)`; the skip is the identity (64 → 64).
struct Block {
    convs: [ConvLayer; 3],
    pool: Option<Pool>,
}

impl Block {
    fn load(vb: &Vb, midblock_group_norm: bool) -> Result<Block, ModelError> {
        let conv = |i: usize| ConvLayer::load(&vb.pp("conv").pp(i), WIDTH, WIDTH, 3, 1, true);
        Ok(Block {
            convs: [conv(0)?, conv(2)?, conv(4)?],
            pool: if midblock_group_norm { Some(Pool::load(&vb.pp("pool"))?) } else { None },
        })
    }

    fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, GpuError> {
        let pooled;
        let x = match &self.pool {
            Some(pool) => {
                pooled = pool.forward(gpu, x)?;
                &pooled
            }
            None => x,
        };
        let h = self.convs[0].forward(gpu, x, None, true)?;
        let h = self.convs[1].forward(gpu, &h, None, true)?;
        self.convs[2].forward(gpu, &h, Some(x), true)
    }
}

enum Layer {
    /// A conv, and whether a ReLU follows it.
    Conv(ConvLayer, bool),
    Block(Block),
    Upsample,
    /// tanh(x / 3) · 3
    Clamp,
}

fn forward_layers(gpu: &Gpu, layers: &[Layer], x: &Tensor) -> Result<Tensor, GpuError> {
    let mut x = x.clone();
    for layer in layers {
        x = match layer {
            Layer::Conv(conv, relu) => conv.forward(gpu, &x, None, *relu)?,
            Layer::Block(block) => block.forward(gpu, &x)?,
            Layer::Upsample => ops::upsample2x(gpu, &x)?,
            Layer::Clamp => ops::unary(gpu, &x, Unary::TanhClamp(3.0))?,
        };
    }
    Ok(x)
}

pub struct TaesdEncoder {
    config: TaesdConfig,
    layers: Vec<Layer>,
}

impl TaesdEncoder {
    /// Loads `0.*` … `14.*`: conv, block, then three times (stride-2 conv, three blocks), conv.
    pub fn load(vb: &Vb, config: TaesdConfig) -> Result<TaesdEncoder, ModelError> {
        let mut layers = vec![
            Layer::Conv(ConvLayer::load(&vb.pp(0), WIDTH, 3, 3, 1, true)?, false),
            Layer::Block(Block::load(&vb.pp(1), false)?),
        ];
        for stage in 0..3 {
            let base = 2 + stage * 4;
            layers.push(Layer::Conv(ConvLayer::load(&vb.pp(base), WIDTH, WIDTH, 3, 2, false)?, false));
            let midblock = stage == 2 && config.midblock_group_norm;
            for i in 1..=3 {
                layers.push(Layer::Block(Block::load(&vb.pp(base + i), midblock)?));
            }
        }
        layers.push(Layer::Conv(
            ConvLayer::load(&vb.pp(14), config.latent_channels, WIDTH, 3, 1, true)?,
            false,
        ));
        Ok(TaesdEncoder { config, layers })
    }

    /// `image` [B, 3, H, W] in [0, 1] → latents [B, latent_channels, H/8, W/8].
    pub fn forward(&self, gpu: &Gpu, image: &Tensor) -> Result<Tensor, ModelError> {
        match *image.shape() {
            [_, 3, h, w] if h % 8 == 0 && w % 8 == 0 && h > 0 && w > 0 => {}
            _ => {
                return Err(ModelError::Input(format!(
                    "TAESD encodes [B, 3, H, W] images with H and W multiples of 8, got {:?}",
                    image.shape()
                )))
            }
        }
        Ok(forward_layers(gpu, &self.layers, image)?)
    }

    pub fn config(&self) -> TaesdConfig {
        self.config
    }
}

pub struct TaesdDecoder {
    config: TaesdConfig,
    layers: Vec<Layer>,
}

impl TaesdDecoder {
    /// Loads `1.*` … `19.*`: clamp, conv + ReLU, three blocks, then three times (upsample,
    /// conv, three blocks — one block the last time), conv to RGB.
    pub fn load(vb: &Vb, config: TaesdConfig) -> Result<TaesdDecoder, ModelError> {
        let mut layers = vec![
            Layer::Clamp,
            Layer::Conv(ConvLayer::load(&vb.pp(1), WIDTH, config.latent_channels, 3, 1, true)?, true),
        ];
        for i in 3..=5 {
            layers.push(Layer::Block(Block::load(&vb.pp(i), config.midblock_group_norm)?));
        }
        for stage in 0..3 {
            let base = 6 + stage * 5;
            layers.push(Layer::Upsample);
            layers.push(Layer::Conv(ConvLayer::load(&vb.pp(base + 1), WIDTH, WIDTH, 3, 1, false)?, false));
            let blocks = if stage == 2 { 1 } else { 3 };
            for i in 0..blocks {
                layers.push(Layer::Block(Block::load(&vb.pp(base + 2 + i), false)?));
            }
        }
        layers.push(Layer::Conv(ConvLayer::load(&vb.pp(19), 3, WIDTH, 3, 1, true)?, false));
        Ok(TaesdDecoder { config, layers })
    }

    /// `latents` [B, latent_channels, h, w] → RGB [B, 3, 8h, 8w], about [0, 1].
    pub fn forward(&self, gpu: &Gpu, latents: &Tensor) -> Result<Tensor, ModelError> {
        match *latents.shape() {
            [_, c, h, w] if c == self.config.latent_channels && h > 0 && w > 0 => {}
            _ => {
                return Err(ModelError::Input(format!(
                    "this TAESD decodes [B, {}, h, w] latents, got {:?}",
                    self.config.latent_channels,
                    latents.shape()
                )))
            }
        }
        Ok(forward_layers(gpu, &self.layers, latents)?)
    }

    pub fn config(&self) -> TaesdConfig {
        self.config
    }
}
