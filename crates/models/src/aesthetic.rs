//! The LAION aesthetic predictor v2 (improved-aesthetic-predictor): an MLP — linear layers with
//! dropouts between and no activation — over the L2-normalised CLIP ViT-L/14 image embedding,
//! giving a score around 1–10. Small enough for the CPU. Read from its `.pth` (through the safe
//! reader) or a `.safetensors` copy: `layers.N.weight` / `layers.N.bias`.

use darkroom_weights::pth::StateDict;
use darkroom_weights::{Dtype, SafetensorsFile};

use crate::loader::ModelError;

struct Linear {
    out: usize,
    inp: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

pub struct AestheticHead {
    layers: Vec<Linear>,
}

impl AestheticHead {
    /// From the head's `.pth` or `.safetensors` bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<AestheticHead, ModelError> {
        let bad = |why: String| ModelError::Input(format!("not an aesthetic predictor head: {why}"));
        // (name, shape, values)
        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        if bytes.starts_with(b"PK\x03\x04") {
            let dict = StateDict::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
            for (name, t) in &dict.tensors {
                let values = dict.to_f32(t).ok_or_else(|| bad(format!("{name} is not a float tensor")))?;
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(bad(format!("{name} holds a NaN or an infinity: the file is damaged")));
                }
                tensors.push((name.clone(), t.shape.clone(), values));
            }
        } else {
            let file = SafetensorsFile::from_bytes(bytes.to_vec()).map_err(|e| bad(e.to_string()))?;
            for info in &file.header.tensors {
                if matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                    let values = file.to_f32(info).map_err(|e| bad(e.to_string()))?;
                    tensors.push((
                        info.name.clone(),
                        info.shape.iter().map(|&d| d as usize).collect(),
                        values,
                    ));
                }
            }
        }
        // layers.N.{weight,bias}, in N's order.
        let mut indices: Vec<usize> = tensors
            .iter()
            .filter_map(|(n, _, _)| n.strip_prefix("layers.")?.strip_suffix(".weight")?.parse().ok())
            .collect();
        indices.sort_unstable();
        let mut layers = Vec::new();
        for i in indices {
            let find = |suffix: &str| tensors.iter().find(|(n, _, _)| *n == format!("layers.{i}.{suffix}"));
            let (_, shape, weight) = find("weight").expect("listed");
            let [out, inp] = shape[..] else {
                return Err(bad(format!("layers.{i}.weight has shape {shape:?}")));
            };
            let bias = match find("bias") {
                Some((_, s, b)) if s[..] == [out] => b.clone(),
                Some((_, s, _)) => return Err(bad(format!("layers.{i}.bias has shape {s:?}"))),
                None => vec![0.0; out],
            };
            if let Some(prev) = layers.last().map(|l: &Linear| l.out) {
                if prev != inp {
                    return Err(bad(format!("layers.{i} takes {inp} values after a layer of {prev}")));
                }
            }
            layers.push(Linear { out, inp, weight: weight.clone(), bias });
        }
        match layers.last() {
            Some(last) if last.out == 1 => Ok(AestheticHead { layers }),
            _ => Err(bad("no layers.N linear layers ending in one output".into())),
        }
    }

    /// The embedding width the head takes (768 for ViT-L/14).
    pub fn input_width(&self) -> usize {
        self.layers[0].inp
    }

    /// The score of an image embedding (normalised here, as the predictor's users do).
    pub fn score(&self, embedding: &[f32]) -> Result<f32, ModelError> {
        if embedding.len() != self.input_width() {
            return Err(ModelError::Input(format!(
                "the aesthetic head takes {}-wide CLIP embeddings, got {} (pair it with CLIP ViT-L/14)",
                self.input_width(),
                embedding.len()
            )));
        }
        let norm = embedding.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt().max(1e-12);
        let mut x: Vec<f64> = embedding.iter().map(|&v| v as f64 / norm).collect();
        for l in &self.layers {
            x = (0..l.out)
                .map(|o| {
                    l.bias[o] as f64 + (0..l.inp).map(|i| l.weight[o * l.inp + i] as f64 * x[i]).sum::<f64>()
                })
                .collect();
        }
        Ok(x[0] as f32)
    }
}
