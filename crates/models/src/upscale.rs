//! Image upscalers of the ESRGAN family, as spandrel (the loader ComfyUI uses) runs them:
//!
//! - **RRDBNet** (ESRGAN, Real-ESRGAN x4plus and its anime 6-block variant, community models
//!   with the same layout): `conv_first`, residual-in-residual dense blocks (five 3x3 convs with
//!   dense concatenation and leaky ReLU 0.2, scaled by 0.2 into the residual), `conv_body`, two
//!   nearest-2x + conv upsampling steps, `conv_hr`, `conv_last`. Scale-2 and scale-1 models
//!   take the image pixel-unshuffled (by 2 or 4), as Real-ESRGAN trains them. The old ESRGAN key
//!   names (`model.0`, `model.1.sub.N.RDB1.conv1.0`, …) are read too.
//! - **SRVGGNetCompact** (realesr-general-x4v3, realesr-animevideov3): 3x3 convs with PReLU,
//!   a pixel shuffle, plus the nearest-upsampled input.
//!
//! The kind, scale, widths and depth come from the weights' names and shapes. Images are
//! [1, 3, H, W] in [0, 1]; the output is not clamped (callers clamp when they store pixels).

use darkroom_gpu::ops::{self, Unary};
use darkroom_gpu::{Gpu, Tensor};
use darkroom_weights::safetensors::Header;

use crate::loader::{ConvLayer, ModelError, Vb};

/// What the weights describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `blocks` RRDBs of `features` channels with `growth` channels per dense conv.
    Rrdb { features: usize, blocks: usize, growth: usize, unshuffle: usize },
    /// `convs` hidden convs of `features` channels.
    Compact { features: usize, convs: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpscalerInfo {
    pub architecture: Architecture,
    pub scale: usize,
    pub in_channels: usize,
    pub out_channels: usize,
}

fn shape(header: &Header, key: &str) -> Option<Vec<usize>> {
    header.get(key).map(|t| t.shape.iter().map(|&d| d as usize).collect())
}

/// How many `prefix.N.` indices exist (the largest N + 1).
fn count(header: &Header, prefix: &str) -> usize {
    header
        .tensors
        .iter()
        .filter_map(|t| t.name.strip_prefix(prefix)?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |n| n + 1)
}

/// Old ESRGAN key names → Real-ESRGAN's (`model.0` → `conv_first`, …), for the layouts this
/// reader knows; names already new are kept.
pub fn new_names(header: &Header) -> Vec<(String, String)> {
    let has_old = header.get("model.0.weight").is_some();
    let blocks = count(header, "model.1.sub.").saturating_sub(1);
    let convs = count(header, "model.");
    header
        .tensors
        .iter()
        .map(|t| {
            let old = t.name.clone();
            if !has_old {
                return (old.clone(), old);
            }
            let parts: Vec<&str> = old.split('.').collect();
            let new = match parts.as_slice() {
                ["model", "0", p] => format!("conv_first.{p}"),
                ["model", "1", "sub", n, p] if n.parse::<usize>().ok() == Some(blocks) => {
                    format!("conv_body.{p}")
                }
                ["model", "1", "sub", n, rdb, conv, "0", p] => {
                    format!("body.{n}.{}.{conv}.{p}", rdb.to_ascii_lowercase())
                }
                ["model", i, p] => {
                    // The tail: upconvs every 3 from model.3, then conv_hr and conv_last.
                    let i: usize = i.parse().unwrap_or(0);
                    let last = convs - 1;
                    if i == last {
                        format!("conv_last.{p}")
                    } else if i + 2 == last {
                        format!("conv_hr.{p}")
                    } else {
                        format!("conv_up{}.{p}", i / 3)
                    }
                }
                _ => old.clone(),
            };
            (old, new)
        })
        .collect()
}

/// An upscaler file's bytes as a safetensors file with Real-ESRGAN's names: `.pth` files
/// (zips from `torch.save`, read by the restricted reader, nested `params_ema` picked) and
/// `.safetensors` alike, old ESRGAN names renamed. Anything else is refused with the reason.
pub fn weights_file(bytes: Vec<u8>) -> Result<Vec<u8>, ModelError> {
    let bytes = if bytes.starts_with(b"PK") || bytes.starts_with(b"\x80") {
        darkroom_weights::pth::StateDict::from_bytes(&bytes)
            .map_err(|e| ModelError::Input(format!("the .pth file: {e}")))?
            .to_safetensors()
    } else {
        bytes
    };
    let file = darkroom_weights::SafetensorsFile::from_bytes(bytes)?;
    let names = new_names(&file.header);
    if names.iter().all(|(old, new)| old == new) {
        return Ok(file.into_bytes());
    }
    let tensors: Vec<(String, &str, Vec<u64>, Vec<u8>)> = file
        .header
        .tensors
        .iter()
        .zip(&names)
        .map(|(t, (_, new))| (new.clone(), t.dtype.name(), t.shape.clone(), file.tensor_bytes(t).to_vec()))
        .collect();
    Ok(darkroom_weights::safetensors::write(&tensors))
}

impl UpscalerInfo {
    /// Reads the architecture from tensor names and shapes (Real-ESRGAN names; see
    /// [`new_names`] for old ESRGAN files).
    pub fn detect(header: &Header) -> Result<UpscalerInfo, ModelError> {
        let unknown = |why: &str| ModelError::Input(format!("not an upscaler this engine knows: {why}"));
        if let Some(first) = shape(header, "conv_first.weight") {
            let [features, in_ch, 3, 3] = first[..] else {
                return Err(unknown("conv_first is not a 3x3 conv"));
            };
            let last = shape(header, "conv_last.weight").ok_or_else(|| unknown("no conv_last"))?;
            let out_channels = last[0];
            let blocks = count(header, "body.");
            let growth =
                shape(header, "body.0.rdb1.conv1.weight").ok_or_else(|| unknown("no body.0.rdb1.conv1"))?[0];
            let upconvs = (1..=3).filter(|i| header.get(&format!("conv_up{i}.weight")).is_some()).count();
            let unshuffle = match in_ch / out_channels.max(1) {
                16 => 4,
                4 => 2,
                _ => 1,
            };
            let scale = (1 << upconvs) / unshuffle;
            if upconvs != 2 || scale == 0 {
                return Err(unknown(&format!("{upconvs} upsampling convs")));
            }
            return Ok(UpscalerInfo {
                architecture: Architecture::Rrdb { features, blocks, growth, unshuffle },
                scale,
                in_channels: in_ch / (unshuffle * unshuffle),
                out_channels,
            });
        }
        if let Some(first) = shape(header, "body.0.weight") {
            let [features, in_channels, 3, 3] = first[..] else {
                return Err(unknown("body.0 is not a 3x3 conv"));
            };
            let last_index = count(header, "body.") - 1;
            let shuffle = shape(header, &format!("body.{last_index}.weight"))
                .ok_or_else(|| unknown("no last conv"))?[0];
            if header.get("body.1.weight").is_none() {
                return Err(unknown("a compact model without PReLU activations"));
            }
            let per_channel = shuffle / in_channels.max(1);
            let scale = (1..=8)
                .find(|s| s * s == per_channel)
                .ok_or_else(|| unknown("its output is not a pixel shuffle"))?;
            return Ok(UpscalerInfo {
                architecture: Architecture::Compact { features, convs: (last_index - 2) / 2 },
                scale,
                in_channels,
                out_channels: in_channels,
            });
        }
        Err(unknown("neither RRDBNet (conv_first, body.N.rdbK) nor SRVGGNetCompact (body.N) weights"))
    }
}

struct Rdb {
    convs: Vec<ConvLayer>,
}

impl Rdb {
    fn load(vb: &Vb, features: usize, growth: usize) -> Result<Rdb, ModelError> {
        let convs = (0..5)
            .map(|j| {
                let out = if j == 4 { features } else { growth };
                ConvLayer::load(&vb.pp(format!("conv{}", j + 1)), out, features + j * growth, 3, 1, true)
            })
            .collect::<Result<_, _>>()?;
        Ok(Rdb { convs })
    }

    fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, ModelError> {
        let mut cat = x.clone();
        for (j, conv) in self.convs.iter().enumerate() {
            let y = conv.forward(gpu, &cat, None, false)?;
            if j == 4 {
                return Ok(ops::lincomb(gpu, &[(0.2, &y), (1.0, x)])?);
            }
            let y = ops::unary(gpu, &y, Unary::LeakyRelu(0.2))?;
            cat = ops::concat(gpu, &cat, &y, 1)?;
        }
        unreachable!("five convs")
    }
}

struct RrdbNet {
    first: ConvLayer,
    blocks: Vec<[Rdb; 3]>,
    body: ConvLayer,
    up: [ConvLayer; 2],
    hr: ConvLayer,
    last: ConvLayer,
    unshuffle: usize,
}

enum Network {
    Rrdb(Box<RrdbNet>),
    Compact { convs: Vec<ConvLayer>, slopes: Vec<Tensor> },
}

pub struct Upscaler {
    pub info: UpscalerInfo,
    /// The activations it was loaded for (its input is made in this type).
    pub dtype: darkroom_gpu::DType,
    network: Network,
}

impl Upscaler {
    /// Loads weights with Real-ESRGAN's names (rename old ESRGAN files with [`new_names`]).
    pub fn load(vb: &Vb, info: UpscalerInfo) -> Result<Upscaler, ModelError> {
        let conv = |name: &str, out: usize, inp: usize| ConvLayer::load(&vb.pp(name), out, inp, 3, 1, true);
        let network = match info.architecture {
            Architecture::Rrdb { features, blocks, growth, unshuffle } => {
                let first = conv("conv_first", features, info.in_channels * unshuffle * unshuffle)?;
                let blocks = (0..blocks)
                    .map(|i| {
                        let b = vb.pp("body").pp(i);
                        Ok([
                            Rdb::load(&b.pp("rdb1"), features, growth)?,
                            Rdb::load(&b.pp("rdb2"), features, growth)?,
                            Rdb::load(&b.pp("rdb3"), features, growth)?,
                        ])
                    })
                    .collect::<Result<_, ModelError>>()?;
                Network::Rrdb(Box::new(RrdbNet {
                    first,
                    blocks,
                    body: conv("conv_body", features, features)?,
                    up: [conv("conv_up1", features, features)?, conv("conv_up2", features, features)?],
                    hr: conv("conv_hr", features, features)?,
                    last: conv("conv_last", info.out_channels, features)?,
                    unshuffle,
                }))
            }
            Architecture::Compact { features, convs } => {
                let shuffle = info.out_channels * info.scale * info.scale;
                let mut layers =
                    vec![ConvLayer::load(&vb.pp("body").pp(0), features, info.in_channels, 3, 1, true)?];
                let mut slopes = Vec::new();
                for k in 0..=convs {
                    let values = vb.pp("body").pp(2 * k + 1).values("weight", &[features])?;
                    slopes.push(Tensor::from_f32(vb.gpu, &[features], &values, vb.dtype)?);
                    let out = if k == convs { shuffle } else { features };
                    layers.push(ConvLayer::load(&vb.pp("body").pp(2 * k + 2), out, features, 3, 1, true)?);
                }
                Network::Compact { convs: layers, slopes }
            }
        };
        Ok(Upscaler { info, dtype: vb.dtype, network })
    }

    /// [1, C, H, W] in [0, 1] → [1, C, H·scale, W·scale]. RRDB models that unshuffle need sides
    /// divisible by their factor (spandrel pads by reflection; callers tile with such sides).
    pub fn forward(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, ModelError> {
        let [1, c, h, w] = *x.shape() else {
            return Err(ModelError::Input(format!(
                "the upscaler takes one [1, C, H, W] image, got {:?}",
                x.shape()
            )));
        };
        if c != self.info.in_channels || h == 0 || w == 0 {
            return Err(ModelError::Input(format!(
                "this upscaler takes {} channels, got {:?}",
                self.info.in_channels,
                x.shape()
            )));
        }
        let lrelu = |t: Tensor| ops::unary(gpu, &t, Unary::LeakyRelu(0.2));
        match &self.network {
            Network::Rrdb(net) => {
                let RrdbNet { first, blocks, body, up, hr, last, unshuffle } = net.as_ref();
                if h % unshuffle != 0 || w % unshuffle != 0 {
                    return Err(ModelError::Input(format!(
                        "this scale-{} model takes sides divisible by {unshuffle}, got {w}x{h}",
                        self.info.scale
                    )));
                }
                let input =
                    if *unshuffle > 1 { ops::pixel_unshuffle(gpu, x, *unshuffle)? } else { x.clone() };
                let feat = first.forward(gpu, &input, None, false)?;
                let mut t = feat.clone();
                for rdbs in blocks {
                    let inner = rdbs.iter().try_fold(t.clone(), |acc, rdb| rdb.forward(gpu, &acc))?;
                    t = ops::lincomb(gpu, &[(0.2, &inner), (1.0, &t)])?;
                }
                let mut t = body.forward(gpu, &t, Some(&feat), false)?;
                for conv in up {
                    t = lrelu(conv.forward(gpu, &ops::upsample2x(gpu, &t)?, None, false)?)?;
                }
                let t = lrelu(hr.forward(gpu, &t, None, false)?)?;
                Ok(last.forward(gpu, &t, None, false)?)
            }
            Network::Compact { convs, slopes } => {
                let mut t = x.clone();
                for (i, conv) in convs.iter().enumerate() {
                    t = conv.forward(gpu, &t, None, false)?;
                    if let Some(slope) = slopes.get(i) {
                        t = ops::prelu(gpu, &t, slope)?;
                    }
                }
                let s = self.info.scale;
                let out = ops::pixel_shuffle(gpu, &t, s)?;
                let base = ops::upsample_nearest(gpu, x, h * s, w * s)?;
                Ok(ops::add(gpu, &out, &base)?)
            }
        }
    }
}
