//! Depth Anything (V1 and V2 share the layout; transformers' `DepthAnythingForDepthEstimation`):
//! a DINOv2 ViT backbone (`Dinov2Backbone`: patches embedded by a strided convolution, a class
//! token, learned positions interpolated bicubically to the image's patch grid, pre-norm layers
//! with per-channel layer scales), four of its layers' states layer-normed and reassembled into
//! maps at four scales (1x1 projections; a transposed convolution up, a strided one down), the
//! DPT fusion stage (pre-activation residual units, bilinear upsampling) and the head (two 3x3
//! convolutions around a bilinear resize to the input's size, a 1x1 to one channel, ReLU for
//! relative depth, a sigmoid times `max_depth` for metric depth). The depth ControlNets read its
//! relative depth (larger is nearer).

use darkroom_gpu::ops::{self, Conv2d, Padding, Region, Unary};
use darkroom_gpu::{Gpu, Tensor, Weight};

use crate::clip::LayerNorm;
use crate::loader::{ConvLayer, ModelError, Vb};

mod config;

use config::{resize_of, Resize};
pub use config::{DepthAnythingConfig, Dinov2Config};

/// One DINOv2 layer: attention and MLP, each pre-normed and scaled per channel.
struct Dinov2Layer {
    norm1: LayerNorm,
    query: Weight,
    key: Weight,
    value: Weight,
    output: Weight,
    scale1: Tensor,
    norm2: LayerNorm,
    fc1: Weight,
    fc2: Weight,
    scale2: Tensor,
}

impl Dinov2Layer {
    fn load(vb: &Vb, cfg: &Dinov2Config, ff: usize) -> Result<Dinov2Layer, ModelError> {
        let d = cfg.hidden_size;
        let attn = vb.pp("attention").pp("attention");
        let scale = |name: &str| -> Result<Tensor, ModelError> {
            let values = vb.pp(name).values("lambda1", &[d])?;
            Ok(Tensor::from_f32(vb.gpu, &[d], &values, vb.dtype)?)
        };
        Ok(Dinov2Layer {
            norm1: LayerNorm::load(&vb.pp("norm1"), d, cfg.layer_norm_eps)?,
            query: attn.pp("query").linear(d, d, cfg.qkv_bias)?,
            key: attn.pp("key").linear(d, d, cfg.qkv_bias)?,
            value: attn.pp("value").linear(d, d, cfg.qkv_bias)?,
            output: vb.pp("attention").pp("output").pp("dense").linear(d, d, true)?,
            scale1: scale("layer_scale1")?,
            norm2: LayerNorm::load(&vb.pp("norm2"), d, cfg.layer_norm_eps)?,
            fc1: vb.pp("mlp").pp("fc1").linear(ff, d, true)?,
            fc2: vb.pp("mlp").pp("fc2").linear(d, ff, true)?,
            scale2: scale("layer_scale2")?,
        })
    }

    fn forward(&self, gpu: &Gpu, x: &Tensor, heads: usize) -> Result<Tensor, ModelError> {
        let h = self.norm1.forward(gpu, x)?;
        let q = ops::linear(gpu, &h, &self.query)?;
        let k = ops::linear(gpu, &h, &self.key)?;
        let v = ops::linear(gpu, &h, &self.value)?;
        let a = ops::attention(gpu, &q, &k, &v, heads, false)?;
        let a = ops::mul(gpu, &ops::linear(gpu, &a, &self.output)?, &self.scale1)?;
        let x = ops::add(gpu, x, &a)?;
        let h = self.norm2.forward(gpu, &x)?;
        let h = ops::unary(gpu, &ops::linear(gpu, &h, &self.fc1)?, Unary::Gelu)?;
        let h = ops::mul(gpu, &ops::linear(gpu, &h, &self.fc2)?, &self.scale2)?;
        Ok(ops::add(gpu, &x, &h)?)
    }
}

/// A reassemble layer: a 1x1 projection, then the resize.
struct Reassemble {
    projection: ConvLayer,
    resize: Option<(ConvLayer, Resize)>,
}

impl Reassemble {
    fn load(vb: &Vb, d: usize, channels: usize, factor: f64) -> Result<Reassemble, ModelError> {
        let projection = ConvLayer::load(&vb.pp("projection"), channels, d, 1, 1, true)?;
        let resize = match resize_of(factor).expect("checked by the config") {
            Resize::Same => None,
            Resize::Down(s) => {
                Some((ConvLayer::load(&vb.pp("resize"), channels, channels, 3, s, true)?, Resize::Down(s)))
            }
            Resize::Up(k) => {
                // ConvTranspose2d with kernel = stride = k: every input pixel becomes a kxk block,
                // a 1x1 convolution to channels·k² followed by a pixel shuffle. Its weight
                // [in, out, k, k] becomes rows (out, i, j) of columns `in`; the bias repeats.
                let vb = vb.pp("resize");
                let w = vb.values("weight", &[channels, channels, k, k])?;
                let b = vb.values("bias", &[channels])?;
                let kk = k * k;
                let mut rows = vec![0.0f32; channels * kk * channels];
                for ci in 0..channels {
                    for co in 0..channels {
                        for ij in 0..kk {
                            rows[(co * kk + ij) * channels + ci] = w[(ci * channels + co) * kk + ij];
                        }
                    }
                }
                let bias: Vec<f32> = b.iter().flat_map(|&v| std::iter::repeat_n(v, kk)).collect();
                let weight =
                    Weight::from_f32(vb.gpu, channels * kk, channels, &rows, Some(&bias), vb.policy.conv)?;
                let geometry = Conv2d { kernel: (1, 1), stride: 1, padding: Padding::same(0) };
                Some((ConvLayer { weight, geometry }, Resize::Up(k)))
            }
        };
        Ok(Reassemble { projection, resize })
    }

    fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, ModelError> {
        let x = self.projection.forward(gpu, x, None, false)?;
        Ok(match &self.resize {
            None => x,
            Some((conv, Resize::Up(k))) => ops::pixel_shuffle(gpu, &conv.forward(gpu, &x, None, false)?, *k)?,
            Some((conv, _)) => conv.forward(gpu, &x, None, false)?,
        })
    }
}

/// DPT's pre-activation residual unit: x + conv2(relu(conv1(relu(x)))).
struct ResidualUnit {
    conv1: ConvLayer,
    conv2: ConvLayer,
}

impl ResidualUnit {
    fn load(vb: &Vb, f: usize) -> Result<ResidualUnit, ModelError> {
        Ok(ResidualUnit {
            conv1: ConvLayer::load(&vb.pp("convolution1"), f, f, 3, 1, true)?,
            conv2: ConvLayer::load(&vb.pp("convolution2"), f, f, 3, 1, true)?,
        })
    }

    fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, ModelError> {
        let h = ops::unary(gpu, x, Unary::Relu)?;
        let h = self.conv1.forward(gpu, &h, None, true)?;
        Ok(self.conv2.forward(gpu, &h, Some(x), false)?)
    }
}

struct Fusion {
    /// The unit applied to the lateral input (absent in the first, deepest, layer).
    residual1: Option<ResidualUnit>,
    residual2: ResidualUnit,
    projection: ConvLayer,
}

impl Fusion {
    /// `size`: the next level's size, or None for 2x.
    fn forward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        lateral: Option<&Tensor>,
        size: Option<(usize, usize)>,
    ) -> Result<Tensor, ModelError> {
        let mut x = x.clone();
        if let (Some(lateral), Some(unit)) = (lateral, &self.residual1) {
            let lateral = match (lateral.shape(), x.shape()) {
                ([.., lh, lw], [.., h, w]) if (lh, lw) != (h, w) => {
                    ops::resize_bilinear(gpu, lateral, *h, *w, false)?
                }
                _ => lateral.clone(),
            };
            x = ops::add(gpu, &x, &unit.forward(gpu, &lateral)?)?;
        }
        let x = self.residual2.forward(gpu, &x)?;
        let &[.., h, w] = x.shape() else { unreachable!("feature maps are [B, C, H, W]") };
        let (oh, ow) = size.unwrap_or((2 * h, 2 * w));
        let x = ops::resize_bilinear(gpu, &x, oh, ow, true)?;
        Ok(self.projection.forward(gpu, &x, None, false)?)
    }
}

/// A relative (or metric) depth map, row-major, at the model's input size.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthMap {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

pub struct DepthAnything {
    config: DepthAnythingConfig,
    patch_embedding: ConvLayer,
    /// [1, 1, D]
    cls_token: Tensor,
    /// The learned positions [1 + g², D] on the CPU (interpolated per grid) and, for the grid
    /// they were learned at, on the GPU.
    positions: Vec<f32>,
    native_positions: Tensor,
    layers: Vec<Dinov2Layer>,
    layernorm: Option<LayerNorm>,
    reassemble: Vec<Reassemble>,
    convs: Vec<ConvLayer>,
    fusion: Vec<Fusion>,
    head_conv1: ConvLayer,
    head_conv2: ConvLayer,
    head_conv3: ConvLayer,
}

impl DepthAnything {
    /// From a `DepthAnythingForDepthEstimation` checkpoint (`backbone.*`, `neck.*`, `head.*`).
    pub fn load(vb: &Vb, config: &DepthAnythingConfig) -> Result<DepthAnything, ModelError> {
        let b = &config.backbone_config;
        let (d, p, f) = (b.hidden_size, b.patch_size, config.fusion_hidden_size);
        let backbone = vb.pp("backbone");
        let emb = backbone.pp("embeddings");
        let mut patch_embedding =
            ConvLayer::load(&emb.pp("patch_embeddings").pp("projection"), d, b.num_channels, p, p, true)?;
        patch_embedding.geometry.padding = Padding::same(0);
        let cls = emb.values("cls_token", &[1, 1, d])?;
        // The table's grid: the square the checkpoint holds (image_size / patch_size for
        // transformers' own, but read from the tensor so a config that disagrees still loads).
        let grid = (b.image_size / p).max(1);
        let positions = emb.values("position_embeddings", &[1, 1 + grid * grid, d])?;
        if emb.contains("mask_token") {
            emb.values("mask_token", &[1, d])?; // used only in pre-training
        }
        let ff = config.intermediate_size();
        let layers = (0..b.num_hidden_layers)
            .map(|i| Dinov2Layer::load(&backbone.pp("encoder").pp("layer").pp(i), b, ff))
            .collect::<Result<Vec<_>, _>>()?;
        let layernorm = if b.apply_layernorm {
            Some(LayerNorm::load(&backbone.pp("layernorm"), d, b.layer_norm_eps)?)
        } else {
            None
        };
        let neck = vb.pp("neck");
        let reassemble = config
            .neck_hidden_sizes
            .iter()
            .zip(&config.reassemble_factors)
            .enumerate()
            .map(|(i, (&c, &factor))| {
                Reassemble::load(&neck.pp("reassemble_stage").pp("layers").pp(i), d, c, factor)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let convs = config
            .neck_hidden_sizes
            .iter()
            .enumerate()
            .map(|(i, &c)| ConvLayer::load(&neck.pp("convs").pp(i), f, c, 3, 1, false))
            .collect::<Result<Vec<_>, _>>()?;
        let fusion = (0..config.neck_hidden_sizes.len())
            .map(|i| {
                let vb = neck.pp("fusion_stage").pp("layers").pp(i);
                // The first (deepest) layer never gets a lateral input; its unused unit is
                // read so the file's every tensor is accounted for.
                let residual1 = ResidualUnit::load(&vb.pp("residual_layer1"), f);
                let residual1 = match (i, residual1) {
                    (0, Err(ModelError::Missing(_))) => None,
                    (0, r) => {
                        r?;
                        None
                    }
                    (_, r) => Some(r?),
                };
                Ok(Fusion {
                    residual1,
                    residual2: ResidualUnit::load(&vb.pp("residual_layer2"), f)?,
                    projection: ConvLayer::load(&vb.pp("projection"), f, f, 1, 1, true)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let head = vb.pp("head");
        Ok(DepthAnything {
            config: config.clone(),
            patch_embedding,
            cls_token: Tensor::from_f32(vb.gpu, &[1, 1, d], &cls, vb.dtype)?,
            native_positions: Tensor::from_f32(vb.gpu, &[1, 1 + grid * grid, d], &positions, vb.dtype)?,
            positions,
            layers,
            layernorm,
            reassemble,
            convs,
            fusion,
            head_conv1: ConvLayer::load(&head.pp("conv1"), f / 2, f, 3, 1, true)?,
            head_conv2: ConvLayer::load(&head.pp("conv2"), config.head_hidden_size, f / 2, 3, 1, true)?,
            head_conv3: ConvLayer::load(&head.pp("conv3"), 1, config.head_hidden_size, 1, 1, true)?,
        })
    }

    pub fn config(&self) -> &DepthAnythingConfig {
        &self.config
    }

    /// The positions for a `gh` x `gw` patch grid: the learned table where it matches, else its
    /// patch part resized bicubically (PyTorch's `interpolate(mode="bicubic")`, as DINOv2 does).
    fn positions_for(&self, gpu: &Gpu, gh: usize, gw: usize) -> Result<Tensor, ModelError> {
        let d = self.config.backbone_config.hidden_size;
        let grid = (self.positions.len() / d - 1).isqrt();
        if gh == grid && gw == grid {
            return Ok(self.native_positions.clone());
        }
        // [g², D] → planar [D, g, g] → resized [D, gh, gw] → [gh·gw, D].
        let table = &self.positions[d..];
        let mut planes = vec![0.0f32; d * grid * grid];
        for (i, row) in table.chunks_exact(d).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                planes[c * grid * grid + i] = v;
            }
        }
        let resized = resize_bicubic(&planes, d, (grid, grid), (gh, gw));
        let mut out = Vec::with_capacity((1 + gh * gw) * d);
        out.extend_from_slice(&self.positions[..d]);
        for i in 0..gh * gw {
            out.extend((0..d).map(|c| resized[c * gh * gw + i]));
        }
        Ok(Tensor::from_f32(gpu, &[1, 1 + gh * gw, d], &out, self.native_positions.dtype())?)
    }

    /// `pixels` [1, C, H, W] (ImageNet-normalised; H and W at least a patch) → the depth map at
    /// (H / patch · patch) x (W / patch · patch), as `predicted_depth`.
    pub async fn forward(&self, gpu: &Gpu, pixels: &Tensor) -> Result<DepthMap, ModelError> {
        let b = &self.config.backbone_config;
        let p = b.patch_size;
        let &[1, c, h, w] = pixels.shape() else {
            return Err(ModelError::Input(format!(
                "Depth Anything takes [1, 3, H, W], got {:?}",
                pixels.shape()
            )));
        };
        if c != b.num_channels || h < p || w < p || h > 8192 || w > 8192 {
            return Err(ModelError::Input(format!(
                "Depth Anything takes [1, {}, H, W] with sides from {p} to 8192, got {:?}",
                b.num_channels,
                pixels.shape()
            )));
        }
        let (gh, gw, d) = (h / p, w / p, b.hidden_size);
        let n = gh * gw;
        let patches = self.patch_embedding.forward(gpu, pixels, None, false)?; // [1, D, gh, gw]
        let tokens = ops::transpose(gpu, &patches.reshape(&[1, d, n])?)?; // [1, N, D]
        let x = ops::concat(gpu, &self.cls_token, &tokens, 1)?;
        let mut x = ops::add(gpu, &x, &self.positions_for(gpu, gh, gw)?)?;
        let mut states = Vec::new();
        for (i, layer) in std::iter::once(None).chain(self.layers.iter().map(Some)).enumerate() {
            if let Some(layer) = layer {
                x = layer.forward(gpu, &x, b.num_attention_heads)?;
            }
            for (slot, _) in self.config.layers_read.iter().enumerate().filter(|(_, &k)| k == i) {
                states.push((slot, x.clone()));
            }
        }
        states.sort_by_key(|(slot, _)| *slot);
        // Each state: layer-normed, the class token dropped, tokens to a [1, D, gh, gw] map.
        let mut features = Vec::with_capacity(states.len());
        for (i, (_, state)) in states.into_iter().enumerate() {
            let state = match &self.layernorm {
                Some(norm) => norm.forward(gpu, &state)?,
                None => state,
            };
            let patch_rows = ops::region::blank(gpu, &[1, 1, n, d], state.dtype());
            let region = Region { src_y: 1, src_x: 0, dst_y: 0, dst_x: 0, h: n, w: d, scale: 1 };
            ops::copy_region(gpu, &state.reshape(&[1, 1, 1 + n, d])?, &patch_rows, region)?;
            let map = ops::transpose(gpu, &patch_rows.reshape(&[1, n, d])?)?.reshape(&[1, d, gh, gw])?;
            let map = self.reassemble[i].forward(gpu, &map)?;
            features.push(self.convs[i].forward(gpu, &map, None, false)?);
        }
        // Fusion from the deepest (last) level up, each resized to the next level's size.
        features.reverse();
        let mut fused: Vec<Tensor> = Vec::with_capacity(features.len());
        for (i, layer) in self.fusion.iter().enumerate() {
            let size = features.get(i + 1).map(|next| match next.shape() {
                [.., h, w] => (*h, *w),
                _ => unreachable!("feature maps are [B, C, H, W]"),
            });
            let out = match fused.last() {
                None => layer.forward(gpu, &features[i], None, size)?,
                Some(previous) => layer.forward(gpu, previous, Some(&features[i]), size)?,
            };
            fused.push(out);
        }
        let count = fused.len() as i64;
        let index = self.config.head_in_index.rem_euclid(count) as usize;
        let (oh, ow) = (gh * self.config.patch_size, gw * self.config.patch_size);
        let x = self.head_conv1.forward(gpu, &fused[index], None, false)?;
        let x = ops::resize_bilinear(gpu, &x, oh, ow, true)?;
        let x = self.head_conv2.forward(gpu, &x, None, true)?;
        let metric = self.config.metric();
        let x = self.head_conv3.forward(gpu, &x, None, !metric)?;
        let max_depth = self.config.max_depth.unwrap_or(1.0) as f32;
        let mut values = x.read_f32(gpu).await?;
        for v in &mut values {
            *v = if metric { 1.0 / (1.0 + (-*v).exp()) } else { *v } * max_depth;
        }
        Ok(DepthMap { width: ow, height: oh, values })
    }
}

/// PyTorch's `interpolate(mode="bicubic", align_corners=False)` of `planes` maps of `from`
/// (h, w) to `to`: source coordinate (o + ½) · in/out − ½ (not clamped), Keys' cubic with
/// a = −0.75 over the four nearest samples, indices clamped to the edge. Separable, in f64.
pub fn resize_bicubic(values: &[f32], planes: usize, from: (usize, usize), to: (usize, usize)) -> Vec<f32> {
    const A: f64 = -0.75;
    let taps = |input: usize, output: usize| -> Vec<([usize; 4], [f64; 4])> {
        let scale = input as f32 / output as f32; // PyTorch computes the scale in f32
        (0..output)
            .map(|o| {
                let s = (o as f64 + 0.5) * scale as f64 - 0.5;
                let x0 = s.floor();
                let t = s - x0;
                let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
                let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
                let weights = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
                let index = |k: i64| (x0 as i64 - 1 + k).clamp(0, input as i64 - 1) as usize;
                ([index(0), index(1), index(2), index(3)], weights)
            })
            .collect()
    };
    let ((h, w), (oh, ow)) = (from, to);
    let (rows, cols) = (taps(h, oh), taps(w, ow));
    let mut out = Vec::with_capacity(planes * oh * ow);
    let mut across = vec![0.0f64; h * ow];
    for plane in values.chunks_exact(h * w).take(planes) {
        for y in 0..h {
            for (x, (idx, wt)) in cols.iter().enumerate() {
                across[y * ow + x] = (0..4).map(|k| wt[k] * plane[y * w + idx[k]] as f64).sum();
            }
        }
        for (idx, wt) in &rows {
            for x in 0..ow {
                out.push((0..4).map(|k| wt[k] * across[idx[k] * ow + x]).sum::<f64>() as f32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_matches_torch_on_a_small_map() {
        // torch.nn.functional.interpolate(arange(12).reshape(1, 1, 3, 4) ** 1.5, size=(5, 7),
        // mode="bicubic", align_corners=False), row 1, printed by PyTorch 2.15.
        let x: Vec<f32> = (0..12).map(|i| (i as f32).powf(1.5)).collect();
        let out = resize_bicubic(&x, 1, (3, 4), (5, 7));
        let torch_row1 = [1.876_198_2, 2.502_755, 3.599_218_6, 4.909_948, 6.489_308_4, 8.246_638, 9.356_152];
        for (a, b) in out[7..14].iter().zip(torch_row1) {
            assert!((a - b).abs() < 1e-4, "{:?} vs {torch_row1:?}", &out[7..14]);
        }
        // A shrink to 2x3.
        let torch_shrunk = [1.468_945_1, 3.722_987_7, 7.239_195_3, 20.117_493, 25.942_896, 32.287_44];
        let out = resize_bicubic(&x, 1, (3, 4), (2, 3));
        for (a, b) in out.iter().zip(torch_shrunk) {
            assert!((a - b).abs() < 1e-4, "{out:?} vs {torch_shrunk:?}");
        }
    }
}
