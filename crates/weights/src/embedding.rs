//! Textual-inversion embeddings: learned token vectors a prompt calls by the file's name, as
//! A1111 uses them. Read from the files people share:
//! - A1111 `.safetensors`: `emb_params` [n, width] (SD 1.x: 768, SD 2.x: 1024), or SDXL's pair
//!   `clip_l` [n, 768] and `clip_g` [n, 1280] (one set of vectors per text encoder);
//! - A1111 `.pt` (a `torch.save` zip): `string_to_param` {"*": [n, width]}, read by the safe
//!   [`crate::pth`] reader;
//! - diffusers' `learned_embeds.safetensors`: one tensor named by its token, [width] or
//!   [n, width].

use crate::pth::{PthError, StateDict};
use crate::safetensors::{SafetensorsError, SafetensorsFile};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EmbeddingError {
    #[error(transparent)]
    File(#[from] SafetensorsError),
    #[error(transparent)]
    Pth(#[from] PthError),
    #[error("this is not a textual-inversion embedding: {0}")]
    NotAnEmbedding(String),
}

/// `n` vectors of `width` values each, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    pub n: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl Vectors {
    fn new(shape: &[u64], values: Vec<f32>, what: &str) -> Result<Vectors, EmbeddingError> {
        let (n, width) = match shape {
            [w] => (1, *w as usize),
            [n, w] => (*n as usize, *w as usize),
            other => {
                return Err(EmbeddingError::NotAnEmbedding(format!(
                    "{what} has shape {other:?}, not [vectors, width]"
                )))
            }
        };
        if n == 0
            || width == 0
            || n > 75
            || values.len() != n * width
            || values.iter().any(|v| !v.is_finite())
        {
            return Err(EmbeddingError::NotAnEmbedding(format!(
                "{what}: {n} vectors of width {width} (1 to 75 finite vectors)"
            )));
        }
        Ok(Vectors { n, width, values })
    }

    /// Vector `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }
}

/// An embedding: one set of vectors (SD 1.x/2.x), or one per SDXL text encoder.
#[derive(Debug, Clone, PartialEq)]
pub enum Embedding {
    Single(Vectors),
    Sdxl { clip_l: Vectors, clip_g: Vectors },
}

impl Embedding {
    /// Reads a `.safetensors` or `.pt` embedding file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Embedding, EmbeddingError> {
        if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"\x80\x02") {
            return Self::from_pt(bytes);
        }
        let file = SafetensorsFile::from_bytes(bytes.to_vec())?;
        let read = |name: &str| -> Result<Option<Vectors>, EmbeddingError> {
            match file.header.get(name) {
                Some(info) => Ok(Some(Vectors::new(&info.shape, file.to_f32(info)?, name)?)),
                None => Ok(None),
            }
        };
        if let (Some(clip_l), Some(clip_g)) = (read("clip_l")?, read("clip_g")?) {
            if clip_l.n != clip_g.n {
                return Err(EmbeddingError::NotAnEmbedding(format!(
                    "clip_l has {} vectors and clip_g {}",
                    clip_l.n, clip_g.n
                )));
            }
            return Ok(Embedding::Sdxl { clip_l, clip_g });
        }
        if let Some(v) = read("emb_params")? {
            return Ok(Embedding::Single(v));
        }
        match &file.header.tensors[..] {
            [one] if !one.name.contains("lora") => {
                Ok(Embedding::Single(Vectors::new(&one.shape, file.to_f32(one)?, &one.name)?))
            }
            _ => Err(EmbeddingError::NotAnEmbedding(
                "no emb_params, clip_l/clip_g or single token tensor (a LoRA or a model?)".into(),
            )),
        }
    }

    fn from_pt(bytes: &[u8]) -> Result<Embedding, EmbeddingError> {
        let dict = StateDict::from_bytes(bytes)?;
        // A1111's files nest the vectors in `string_to_param` under "*".
        let (name, tensor) = match &dict.tensors[..] {
            [(name, t)] => (name, t),
            _ => {
                return Err(EmbeddingError::NotAnEmbedding(format!(
                    "{} tensors where A1111's string_to_param holds one",
                    dict.tensors.len()
                )))
            }
        };
        let values = dict.to_f32(tensor).ok_or_else(|| {
            EmbeddingError::NotAnEmbedding(format!("{name} is {}, not a float tensor", tensor.dtype.name()))
        })?;
        let shape: Vec<u64> = tensor.shape.iter().map(|&d| d as u64).collect();
        Ok(Embedding::Single(Vectors::new(&shape, values, name)?))
    }

    /// Vectors per use in a prompt (the tokens it takes).
    pub fn vectors(&self) -> usize {
        match self {
            Embedding::Single(v) => v.n,
            Embedding::Sdxl { clip_l, .. } => clip_l.n,
        }
    }

    /// The vectors for a text encoder `width` wide (`second`: SDXL's second encoder), or why they
    /// do not fit.
    pub fn for_encoder(&self, width: usize, second: Option<bool>) -> Result<&Vectors, String> {
        let v = match (self, second) {
            (Embedding::Single(v), None) => v,
            (Embedding::Sdxl { clip_l, .. }, Some(false)) => clip_l,
            (Embedding::Sdxl { clip_g, .. }, Some(true)) => clip_g,
            (Embedding::Single(v), Some(_)) => {
                return Err(format!(
                    "is an SD 1.x/2.x embedding ({} wide); this SDXL model needs one with clip_l and clip_g vectors",
                    v.width
                ))
            }
            (Embedding::Sdxl { .. }, None) => {
                return Err("is an SDXL embedding (clip_l/clip_g); this model is SD 1.x/2.x".into())
            }
        };
        if v.width != width {
            return Err(format!("is {} wide; this model's text encoder takes {width}", v.width));
        }
        Ok(v)
    }
}

/// The name an embedding goes by in prompts: its file name without the extension.
pub fn name_from_file(file_name: &str) -> String {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    [".safetensors", ".pt", ".bin"].iter().find_map(|ext| base.strip_suffix(ext)).unwrap_or(base).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tensors: &[(&str, &[u64], Vec<f32>)]) -> Vec<u8> {
        let t: Vec<(String, &str, Vec<u64>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s, v)| {
                (n.to_string(), "F32", s.to_vec(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
            })
            .collect();
        crate::safetensors::write(&t)
    }

    #[test]
    fn the_shared_layouts_read_and_say_what_fits() {
        let a1111 = Embedding::from_bytes(&file(&[("emb_params", &[2, 3], vec![1.0; 6])])).unwrap();
        assert_eq!(a1111.vectors(), 2);
        assert!(a1111.for_encoder(3, None).is_ok());
        assert!(a1111.for_encoder(768, None).unwrap_err().contains("3 wide"));
        assert!(a1111.for_encoder(3, Some(false)).unwrap_err().contains("SDXL model"));
        let xl = Embedding::from_bytes(&file(&[
            ("clip_g", &[1, 4], vec![0.5; 4]),
            ("clip_l", &[1, 2], vec![0.0; 2]),
        ]))
        .unwrap();
        assert_eq!(xl.for_encoder(4, Some(true)).unwrap().width, 4);
        assert!(xl.for_encoder(2, None).unwrap_err().contains("SDXL embedding"));
        let diffusers = Embedding::from_bytes(&file(&[("<cat-toy>", &[3], vec![0.1, 0.2, 0.3])])).unwrap();
        assert_eq!(diffusers, Embedding::Single(Vectors { n: 1, width: 3, values: vec![0.1, 0.2, 0.3] }));
        let lora = file(&[("lora_unet_x.lora_down.weight", &[1, 1], vec![1.0]), ("b", &[1], vec![1.0])]);
        assert!(matches!(Embedding::from_bytes(&lora), Err(EmbeddingError::NotAnEmbedding(_))));
        let nan = file(&[("emb_params", &[1, 2], vec![f32::NAN, 0.0])]);
        assert!(Embedding::from_bytes(&nan).is_err());
        assert_eq!(name_from_file("C:\\emb\\bad-hands-5.pt"), "bad-hands-5");
        assert_eq!(name_from_file("easynegative.safetensors"), "easynegative");
    }
}
