//! diffusers building blocks shared by the VAE and the UNet: GroupNorm, ResnetBlock2D,
//! Downsample2D, Upsample2D and the single-head spatial attention of the VAE's mid block.

use darkroom_gpu::ops::{self, Conv2d, Fused, Padding};
use darkroom_gpu::{Gpu, Tensor, Weight};

use crate::loader::{ConvLayer, ModelError, Vb};
use crate::tiles::{Rect, Tiles};

/// A 3x3, stride 1 convolution of a tile gathered with a one-pixel border, padded where the
/// tile meets the image's edge: gives the tile exactly as the whole image's convolution would.
fn conv3_tile(
    gpu: &Gpu,
    conv: &ConvLayer,
    (x, padding): (Tensor, Padding),
    residual: Option<&Tensor>,
) -> Result<Tensor, ModelError> {
    let geometry = Conv2d { kernel: (3, 3), stride: 1, padding };
    Ok(ops::conv2d(gpu, &x, &conv.weight, geometry, residual)?)
}

/// Runs `f` on each rectangle of `rects` and holds the results as tiles of a `height` x `width`
/// map.
pub fn per_tile(
    height: usize,
    width: usize,
    rects: &[Rect],
    mut f: impl FnMut(Rect) -> Result<Tensor, ModelError>,
) -> Result<Tiles, ModelError> {
    let parts = rects.iter().map(|&r| Ok((r, f(r)?))).collect::<Result<Vec<_>, ModelError>>()?;
    Ok(Tiles::from_parts(height, width, parts)?)
}

pub struct GroupNorm {
    pub groups: usize,
    pub eps: f32,
    gamma: Tensor,
    beta: Tensor,
}

impl GroupNorm {
    pub fn load(vb: &Vb, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm, ModelError> {
        Ok(GroupNorm {
            groups,
            eps: eps as f32,
            gamma: vb.vector("weight", channels)?,
            beta: vb.vector("bias", channels)?,
        })
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor, fused: Fused) -> Result<Tensor, ModelError> {
        Ok(ops::group_norm(gpu, x, self.groups, &self.gamma, &self.beta, self.eps, fused)?)
    }

    /// The statistics of a map held as `tiles`, for [`GroupNorm::apply`].
    pub fn stats(&self, gpu: &Gpu, tiles: &Tiles) -> Result<ops::GroupStats, ModelError> {
        Ok(ops::GroupStats::over(gpu, &tiles.tensors(), self.groups)?)
    }

    /// A tile (with or without a border) normalised with the whole map's `stats`.
    pub fn apply(
        &self,
        gpu: &Gpu,
        stats: &ops::GroupStats,
        x: &Tensor,
        fused: Fused,
    ) -> Result<Tensor, ModelError> {
        Ok(stats.apply(gpu, x, &self.gamma, &self.beta, self.eps, fused)?)
    }

    /// `x`'s rectangle `rect` (after a nearest `scale`x upsampling) with a one-pixel border,
    /// normalised with `stats`, then SiLU; with the padding a 3x3 convolution of it needs.
    fn gather_silu(
        &self,
        gpu: &Gpu,
        stats: &ops::GroupStats,
        x: &Tiles,
        rect: Rect,
        scale: usize,
    ) -> Result<(Tensor, Padding), ModelError> {
        let (t, padding) = x.gather(gpu, rect, 1, scale)?;
        Ok((self.apply(gpu, stats, &t, Fused::Silu)?, padding))
    }
}

/// diffusers' `ResnetBlock2D`: norm1 → SiLU → conv1 (+ time embedding) → norm2 → SiLU → conv2,
/// plus the input (through a 1x1 `conv_shortcut` when the channel count changes).
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: ConvLayer,
    time_emb_proj: Option<Weight>,
    norm2: GroupNorm,
    conv2: ConvLayer,
    conv_shortcut: Option<ConvLayer>,
}

impl ResnetBlock2D {
    /// `temb_channels` is `None` for the VAE's blocks, which take no time embedding.
    pub fn load(
        vb: &Vb,
        in_channels: usize,
        out_channels: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<ResnetBlock2D, ModelError> {
        Ok(ResnetBlock2D {
            norm1: GroupNorm::load(&vb.pp("norm1"), groups, in_channels, eps)?,
            conv1: ConvLayer::load(&vb.pp("conv1"), out_channels, in_channels, 3, 1, true)?,
            time_emb_proj: match temb_channels {
                Some(t) => Some(vb.pp("time_emb_proj").linear(out_channels, t, true)?),
                None => None,
            },
            norm2: GroupNorm::load(&vb.pp("norm2"), groups, out_channels, eps)?,
            conv2: ConvLayer::load(&vb.pp("conv2"), out_channels, out_channels, 3, 1, true)?,
            conv_shortcut: if in_channels != out_channels {
                Some(ConvLayer::load(&vb.pp("conv_shortcut"), out_channels, in_channels, 1, 1, true)?)
            } else {
                None
            },
        })
    }

    /// `x` [B, Cin, H, W]; `temb_silu` [B, T] is SiLU(time embedding), shared by all blocks.
    pub fn forward(&self, gpu: &Gpu, x: &Tensor, temb_silu: Option<&Tensor>) -> Result<Tensor, ModelError> {
        let h = self.norm1.forward(gpu, x, Fused::Silu)?;
        let mut h = self.conv1.forward(gpu, &h, None, false)?; // [B, Cout, H, W]
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb_silu) {
            let t = ops::linear(gpu, temb, proj)?; // [B, Cout]
            let [b, c] = *t.shape() else { unreachable!("linear keeps [B, Cout]") };
            h = ops::add(gpu, &h, &t.reshape(&[b, c, 1, 1])?)?;
        }
        let h = self.norm2.forward(gpu, &h, Fused::Silu)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(gpu, x, None, false)?,
            None => x.clone(),
        };
        Ok(self.conv2.forward(gpu, &h, Some(&shortcut), false)?)
    }

    /// [`ResnetBlock2D::forward`] (without a time embedding) over a map held as tiles, the
    /// result tiled by `rects`. Each group norm takes the whole map's statistics, so the
    /// result equals the untiled block's up to rounding. Each input tile is released once its
    /// output tile exists.
    pub fn forward_tiles(&self, gpu: &Gpu, mut x: Tiles, rects: &[Rect]) -> Result<Tiles, ModelError> {
        let (h, w) = (x.height, x.width);
        let stats = self.norm1.stats(gpu, &x)?;
        let hidden = per_tile(h, w, rects, |r| {
            conv3_tile(gpu, &self.conv1, self.norm1.gather_silu(gpu, &stats, &x, r, 1)?, None)
        })?;
        let stats = self.norm2.stats(gpu, &hidden)?;
        per_tile(h, w, rects, |r| {
            let core = x.take(gpu, r)?;
            let shortcut = match &self.conv_shortcut {
                Some(conv) => conv.forward(gpu, &core, None, false)?,
                None => core.clone(),
            };
            let out = conv3_tile(
                gpu,
                &self.conv2,
                self.norm2.gather_silu(gpu, &stats, &hidden, r, 1)?,
                Some(&shortcut),
            )?;
            // The input tile leaves the GPU now (submitted, then out of the pool, not kept
            // for reuse), so the input and the output are never both whole.
            drop((core, shortcut));
            gpu.flush();
            gpu.trim_pool();
            Ok(out)
        })
    }
}

/// diffusers' `Downsample2D` with a conv: stride 2, padding 1 (UNet) or, with `padding=0` as in
/// the VAE, zero padding on the bottom and right only.
pub struct Downsample2D {
    conv: ConvLayer,
}

impl Downsample2D {
    pub fn load(vb: &Vb, channels: usize, vae_padding: bool) -> Result<Downsample2D, ModelError> {
        let mut conv = ConvLayer::load(&vb.pp("conv"), channels, channels, 3, 2, true)?;
        if vae_padding {
            conv.geometry = Conv2d {
                kernel: (3, 3),
                stride: 2,
                padding: Padding { top: 0, bottom: 1, left: 0, right: 1 },
            };
        }
        Ok(Downsample2D { conv })
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.conv.forward(gpu, x, None, false)?)
    }
}

/// diffusers' `Upsample2D`: nearest 2x (or to a given size), then a 3x3 conv.
pub struct Upsample2D {
    conv: ConvLayer,
}

impl Upsample2D {
    pub fn load(vb: &Vb, channels: usize) -> Result<Upsample2D, ModelError> {
        Ok(Upsample2D { conv: ConvLayer::load(&vb.pp("conv"), channels, channels, 3, 1, true)? })
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.conv.forward(gpu, &ops::upsample2x(gpu, x)?, None, false)?)
    }

    /// [`Upsample2D::forward`] over a map held as tiles; `rects` tile the upsampled map. No
    /// upsampled copy of a whole tile is made: the gather reads through the 2x upsampling.
    pub fn forward_tiles(&self, gpu: &Gpu, x: &Tiles, rects: &[Rect]) -> Result<Tiles, ModelError> {
        per_tile(2 * x.height, 2 * x.width, rects, |r| {
            conv3_tile(gpu, &self.conv, x.gather(gpu, r, 1, 2)?, None)
        })
    }

    /// Nearest resize to `size` (h, w) instead of 2x: the UNet's up blocks meet skip connections
    /// of odd sizes when the latents are not a multiple of its factor, as diffusers'
    /// `upsample_size`.
    pub fn forward_to(&self, gpu: &Gpu, x: &Tensor, (h, w): (usize, usize)) -> Result<Tensor, ModelError> {
        Ok(self.conv.forward(gpu, &ops::upsample_nearest(gpu, x, h, w)?, None, false)?)
    }
}

/// The VAE mid block's `Attention`: group norm, single-head self-attention over pixels,
/// output projection, plus the input.
pub struct SpatialSelfAttention {
    group_norm: GroupNorm,
    to_q: Weight,
    to_k: Weight,
    to_v: Weight,
    to_out: Weight,
}

impl SpatialSelfAttention {
    pub fn load(
        vb: &Vb,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<SpatialSelfAttention, ModelError> {
        Ok(SpatialSelfAttention {
            group_norm: GroupNorm::load(&vb.pp("group_norm"), groups, channels, eps)?,
            to_q: vb.pp("to_q").linear(channels, channels, true)?,
            to_k: vb.pp("to_k").linear(channels, channels, true)?,
            to_v: vb.pp("to_v").linear(channels, channels, true)?,
            to_out: vb.pp("to_out").pp(0).linear(channels, channels, true)?,
        })
    }

    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, ModelError> {
        let [b, c, h, w] = *x.shape() else {
            return Err(ModelError::Input(format!("attention needs [B, C, H, W], got {:?}", x.shape())));
        };
        let normed = self.group_norm.forward(gpu, x, Fused::None)?;
        let tokens = ops::transpose(gpu, &normed.reshape(&[b, c, h * w])?)?; // [B, HW, C]
        let q = ops::linear(gpu, &tokens, &self.to_q)?;
        let k = ops::linear(gpu, &tokens, &self.to_k)?;
        let v = ops::linear(gpu, &tokens, &self.to_v)?;
        let a = ops::linear(gpu, &ops::attention(gpu, &q, &k, &v, 1, false)?, &self.to_out)?; // [B, HW, C]
        let back = ops::transpose(gpu, &a)?.reshape(&[b, c, h, w])?;
        Ok(ops::add(gpu, &back, x)?)
    }
}
