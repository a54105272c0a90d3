//! Model manifests (`models/*.toml`): what a model is, where its files live, how big they are,
//! how to check them, its license and the settings it works best with. Read by the web app and
//! the CLI alike.
//!
//! File URLs are `{base}/{path}` with `base` = `https://huggingface.co/{repo}/resolve/{revision}`,
//! or a base given at run time (tests serve a tiny model from localhost that way).

use serde::Deserialize;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    #[error("manifest {file}: {detail}")]
    Invalid { file: String, detail: String },
    #[error("no model called {0:?}; known: {1}")]
    Unknown(String, String),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short id: `darkroom generate --model sd-turbo`, the cache folder's name.
    pub id: String,
    /// Shown to users.
    pub name: String,
    /// What kind of model this is: `sd1`, `sd1-inpainting`, `sd2`, `sd-turbo`, `sdxl`,
    /// `sdxl-turbo`, `taesd`, `test`, `test-sdxl`, `controlnet-sd1`, `controlnet-sdxl`,
    /// `upscaler`, `clip`, `aesthetic`, `depth`.
    pub family: ModelKind,
    #[serde(default)]
    pub description: String,
    /// Approximate download size in bytes (from the parameter counts), shown before the first
    /// download while the files' exact sizes are not listed.
    #[serde(default)]
    pub approx_size: Option<u64>,
    pub license: License,
    pub source: Source,
    #[serde(default)]
    pub defaults: Option<Defaults>,
    /// How the weights are stored on the GPU by default (the user may override).
    #[serde(default)]
    pub quantization: Quantization,
    pub files: Vec<FileEntry>,
}

/// A manifest's model kind. Everything that depends on it (whether it generates, takes a mask,
/// can be the base of an SD 1.x checkpoint import) asks this enum, not the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ModelKind {
    /// Stable Diffusion 1.x.
    #[serde(rename = "sd1")]
    Sd1,
    /// An SD 1.x inpainting UNet (9 input channels).
    #[serde(rename = "sd1-inpainting")]
    Sd1Inpainting,
    /// Stable Diffusion 2.x.
    #[serde(rename = "sd2")]
    Sd2,
    /// SD-Turbo: SD 2.1's architecture distilled for 1–4 steps.
    #[serde(rename = "sd-turbo")]
    SdTurbo,
    /// Stable Diffusion XL 1.0 (two text encoders, 1024x1024).
    #[serde(rename = "sdxl")]
    Sdxl,
    /// SDXL-Turbo: SDXL distilled for 1–4 steps without guidance, 512x512.
    #[serde(rename = "sdxl-turbo")]
    SdxlTurbo,
    /// A TAESD preview decoder: makes no images itself.
    #[serde(rename = "taesd")]
    Taesd,
    /// The tiny test models (SD 1.x layout).
    #[serde(rename = "test")]
    Test,
    /// The tiny SDXL test model.
    #[serde(rename = "test-sdxl")]
    TestSdxl,
    /// A ControlNet for SD 1.x models: makes no images itself.
    #[serde(rename = "controlnet-sd1")]
    ControlnetSd1,
    /// A ControlNet for SDXL models.
    #[serde(rename = "controlnet-sdxl")]
    ControlnetSdxl,
    /// An image upscaler (ESRGAN family): `darkroom upscale`.
    #[serde(rename = "upscaler")]
    Upscaler,
    /// A CLIP model (a transformers `CLIPModel` folder) for CLIP scores and image embeddings.
    #[serde(rename = "clip")]
    Clip,
    /// An aesthetic predictor's head over CLIP's image embedding.
    #[serde(rename = "aesthetic")]
    Aesthetic,
    /// A depth estimator (transformers' Depth Anything) for the depth preprocessor.
    #[serde(rename = "depth")]
    Depth,
}

impl ModelKind {
    /// As a manifest writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Sd1 => "sd1",
            ModelKind::Sd1Inpainting => "sd1-inpainting",
            ModelKind::Sd2 => "sd2",
            ModelKind::SdTurbo => "sd-turbo",
            ModelKind::Sdxl => "sdxl",
            ModelKind::SdxlTurbo => "sdxl-turbo",
            ModelKind::TestSdxl => "test-sdxl",
            ModelKind::Taesd => "taesd",
            ModelKind::Test => "test",
            ModelKind::ControlnetSd1 => "controlnet-sd1",
            ModelKind::ControlnetSdxl => "controlnet-sdxl",
            ModelKind::Upscaler => "upscaler",
            ModelKind::Clip => "clip",
            ModelKind::Aesthetic => "aesthetic",
            ModelKind::Depth => "depth",
        }
    }

    /// Makes images (TAESD only decodes previews).
    pub fn generates(self) -> bool {
        !matches!(
            self,
            ModelKind::Taesd
                | ModelKind::ControlnetSd1
                | ModelKind::ControlnetSdxl
                | ModelKind::Upscaler
                | ModelKind::Clip
                | ModelKind::Aesthetic
                | ModelKind::Depth
        )
    }

    /// A ControlNet (a `--control` unit's model).
    pub fn is_controlnet(self) -> bool {
        matches!(self, ModelKind::ControlnetSd1 | ModelKind::ControlnetSdxl)
    }

    /// A ControlNet of this kind fits models of kind `model` (an SD 1.x ControlNet SD 1.x
    /// models, an SDXL ControlNet SDXL models).
    pub fn controls(self, model: ModelKind) -> bool {
        match self {
            ModelKind::ControlnetSd1 => model.is_sd1(),
            ModelKind::ControlnetSdxl => model.is_sdxl(),
            _ => false,
        }
    }

    /// A 9-channel inpainting UNet: needs an init image and a mask.
    pub fn inpainting(self) -> bool {
        self == ModelKind::Sd1Inpainting
    }

    /// SD 1.x's layout: the base a single-file SD 1.x checkpoint imports onto.
    /// SDXL's pipeline: two text encoders, added conditioning.
    pub fn is_sdxl(self) -> bool {
        matches!(self, ModelKind::Sdxl | ModelKind::SdxlTurbo | ModelKind::TestSdxl)
    }

    pub fn is_sd1(self) -> bool {
        matches!(self, ModelKind::Sd1 | ModelKind::Sd1Inpainting | ModelKind::Test)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct License {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Hugging Face repository, "owner/name".
    pub repo: String,
    /// A commit (pinned) or a branch.
    pub revision: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub cfg: f32,
    /// A sampler id (`euler_a`, `dpmpp_2m_karras`, `turbo`, …).
    pub sampler: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Quantization {
    /// Matmul weights: none, f16, q8, q4.
    pub linear: String,
    /// Convolution weights: none, f16, q8, q4.
    pub conv: String,
}

impl Default for Quantization {
    fn default() -> Self {
        Quantization { linear: "f16".into(), conv: "f16".into() }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path in the repository (and in the local copy): `unet/config.json`.
    pub path: String,
    /// text_encoder, tokenizer, unet, vae, taesd, scheduler, pipeline.
    pub component: String,
    /// Bytes, where known.
    #[serde(default)]
    pub size: Option<u64>,
    /// Lower-case hex, where known (with `tensors`: of the file as stored).
    #[serde(default)]
    pub sha256: Option<String>,
    /// For a safetensors file: only the tensors whose names start with one of these are
    /// downloaded, by range (`crate::tensor_subset`), and stored as a file of their own.
    #[serde(default)]
    pub tensors: Vec<String>,
}

const FORMATS: [&str; 5] = ["none", "f32", "f16", "q8", "q4"];

/// The one rule for a model id, checked before anything is written under it (by a manifest,
/// an import or a download, in the CLI and the app): 1 to 64 lower-case letters, digits, '-'
/// and '.', starting with a letter or a digit, no ".." (so an id is always one plain folder
/// or key segment: never `.`, `..`, a hidden name or a path).
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !id.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "id {id:?} must be 1 to 64 lower-case letters, digits, '-' and '.', start with a letter or a digit, and have no \"..\""
        ))
    }
}

impl Manifest {
    /// Parses and checks one manifest; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Manifest, ManifestError> {
        let invalid = |detail: String| ManifestError::Invalid { file: file.to_string(), detail };
        let m: Manifest = toml::from_str(text).map_err(|e| {
            // An unknown kind is most likely a model family this version does not run yet.
            let message = e.to_string();
            if message.contains("unknown variant") && message.contains("family") {
                invalid(format!("{message} (a model kind this version of Darkroom does not run)"))
            } else {
                invalid(message)
            }
        })?;
        check_id(&m.id).map_err(invalid)?;
        if m.files.is_empty() {
            return Err(invalid("lists no files".into()));
        }
        for f in &m.files {
            let safe = !f.path.is_empty()
                && !f.path.starts_with('/')
                && !f.path.contains('\\')
                && f.path.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
            if !safe {
                return Err(invalid(format!("file path {:?} must be relative, without '..'", f.path)));
            }
            if !f.tensors.is_empty()
                && (!f.path.ends_with(".safetensors") || f.tensors.iter().any(|t| t.is_empty()))
            {
                return Err(invalid(format!(
                    "{}: tensors (name prefixes, none empty) only select from a .safetensors file",
                    f.path
                )));
            }
            if let Some(h) = &f.sha256 {
                if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
                    return Err(invalid(format!("{}: sha256 must be 64 lower-case hex digits", f.path)));
                }
            }
        }
        let mut paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        paths.sort_unstable();
        if let Some(w) = paths.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(format!("{} is listed twice", w[0])));
        }
        for (what, v) in [("linear", &m.quantization.linear), ("conv", &m.quantization.conv)] {
            if !FORMATS.contains(&v.as_str()) {
                return Err(invalid(format!(
                    "quantization.{what} {v:?} is not one of {}",
                    FORMATS.join(", ")
                )));
            }
        }
        if !m.license.url.starts_with("https://") {
            return Err(invalid("license.url must be an https URL".into()));
        }
        Ok(m)
    }

    /// The CDN base: `https://huggingface.co/{repo}/resolve/{revision}`.
    pub fn cdn_base(&self) -> String {
        format!("https://huggingface.co/{}/resolve/{}", self.source.repo, self.source.revision)
    }

    /// A file's URL under `base` (the CDN's unless one is given).
    pub fn url(&self, file: &FileEntry, base: Option<&str>) -> String {
        let base = base.map_or_else(|| self.cdn_base(), |b| b.trim_end_matches('/').to_string());
        format!("{base}/{}", file.path)
    }

    /// Bytes to download, and whether every size is known.
    pub fn download_size(&self) -> (u64, bool) {
        let known = self.files.iter().filter_map(|f| f.size).sum();
        (known, self.files.iter().all(|f| f.size.is_some()))
    }
}

/// The manifests shipped in `models/`, compiled in so the CLI and the web app agree.
pub const BUILTIN: [(&str, &str); 21] = [
    ("sd-turbo.toml", include_str!("../../../models/sd-turbo.toml")),
    ("sd-1.5.toml", include_str!("../../../models/sd-1.5.toml")),
    ("sd-1.5-inpainting.toml", include_str!("../../../models/sd-1.5-inpainting.toml")),
    ("taesd.toml", include_str!("../../../models/taesd.toml")),
    ("control-canny.toml", include_str!("../../../models/control-canny.toml")),
    ("control-depth.toml", include_str!("../../../models/control-depth.toml")),
    ("control-lineart.toml", include_str!("../../../models/control-lineart.toml")),
    ("control-scribble.toml", include_str!("../../../models/control-scribble.toml")),
    ("control-tile.toml", include_str!("../../../models/control-tile.toml")),
    ("realesrgan-x4plus.toml", include_str!("../../../models/realesrgan-x4plus.toml")),
    ("sdxl-turbo.toml", include_str!("../../../models/sdxl-turbo.toml")),
    ("sdxl.toml", include_str!("../../../models/sdxl.toml")),
    ("clip-vit-large-patch14.toml", include_str!("../../../models/clip-vit-large-patch14.toml")),
    (
        "clip-vit-large-patch14-vision.toml",
        include_str!("../../../models/clip-vit-large-patch14-vision.toml"),
    ),
    ("aesthetic-v2.toml", include_str!("../../../models/aesthetic-v2.toml")),
    ("realesr-general-x4v3.toml", include_str!("../../../models/realesr-general-x4v3.toml")),
    ("depth-anything-v2-small.toml", include_str!("../../../models/depth-anything-v2-small.toml")),
    ("control-canny-sdxl.toml", include_str!("../../../models/control-canny-sdxl.toml")),
    ("control-depth-sdxl.toml", include_str!("../../../models/control-depth-sdxl.toml")),
    ("control-canny-sdxl-small.toml", include_str!("../../../models/control-canny-sdxl-small.toml")),
    ("control-depth-sdxl-small.toml", include_str!("../../../models/control-depth-sdxl-small.toml")),
];

/// Every built-in manifest, parsed.
pub fn builtin() -> Result<Vec<Manifest>, ManifestError> {
    BUILTIN.iter().map(|(file, text)| Manifest::parse(text, file)).collect()
}

/// A built-in manifest by id.
pub fn find(id: &str) -> Result<Manifest, ManifestError> {
    let all = builtin()?;
    let ids: Vec<String> = all.iter().map(|m| m.id.clone()).collect();
    all.into_iter().find(|m| m.id == id).ok_or_else(|| ManifestError::Unknown(id.to_string(), ids.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifests_parse_with_licenses_and_defaults() {
        let all = builtin().unwrap();
        let ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "sd-turbo",
                "sd-1.5",
                "sd-1.5-inpainting",
                "taesd",
                "control-canny",
                "control-depth",
                "control-lineart",
                "control-scribble",
                "control-tile",
                "realesrgan-x4plus",
                "sdxl-turbo",
                "sdxl",
                "clip-vit-large-patch14",
                "clip-vit-large-patch14-vision",
                "aesthetic-v2",
                "realesr-general-x4v3",
                "depth-anything-v2-small",
                "control-canny-sdxl",
                "control-depth-sdxl",
                "control-canny-sdxl-small",
                "control-depth-sdxl-small"
            ]
        );
        for m in &all {
            assert!(m.license.url.starts_with("https://"), "{}", m.id);
            assert!(!m.files.is_empty());
        }
        let kinds: Vec<ModelKind> = all.iter().map(|m| m.family).collect();
        assert_eq!(
            kinds[..4],
            [ModelKind::SdTurbo, ModelKind::Sd1, ModelKind::Sd1Inpainting, ModelKind::Taesd]
        );
        assert!(kinds[4..9].iter().all(|k| k.is_controlnet() && !k.generates()));
        assert_eq!(kinds[9], ModelKind::Upscaler);
        assert_eq!(kinds[10..12], [ModelKind::SdxlTurbo, ModelKind::Sdxl]);
        assert!(kinds[17..].iter().all(|&k| k.controls(ModelKind::Sdxl) && !k.controls(ModelKind::Sd1)));
        assert!(kinds[4..9].iter().all(|&k| k.controls(ModelKind::Sd1) && !k.controls(ModelKind::SdxlTurbo)));
        assert_eq!(
            kinds[12..17],
            [ModelKind::Clip, ModelKind::Clip, ModelKind::Aesthetic, ModelKind::Upscaler, ModelKind::Depth]
        );
        let vision = find("clip-vit-large-patch14-vision").unwrap();
        assert_eq!(vision.files[1].tensors, ["vision_model.", "visual_projection."]);
        assert!(kinds[12..].iter().all(|k| !k.generates()));
        assert!(kinds[10..12].iter().all(|k| k.is_sdxl() && k.generates() && !k.is_sd1()));
        for id in ["sdxl-turbo", "sdxl"] {
            let m = find(id).unwrap();
            let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
            for needed in
                ["text_encoder_2/model.fp16.safetensors", "tokenizer_2/vocab.json", "unet/config.json"]
            {
                assert!(paths.contains(&needed), "{id} lacks {needed}");
            }
            assert_eq!(m.quantization.linear, "q4", "{id}: 4-bit UNet matmuls by default");
        }
        let makes_no_images = |k: ModelKind| {
            matches!(
                k,
                ModelKind::Taesd
                    | ModelKind::Upscaler
                    | ModelKind::Clip
                    | ModelKind::Aesthetic
                    | ModelKind::Depth
            ) || k.is_controlnet()
        };
        assert!(all.iter().all(|m| m.family.generates() != makes_no_images(m.family)));
        let canny = find("control-canny").unwrap();
        assert_eq!(
            canny.url(&canny.files[1], None),
            "https://huggingface.co/lllyasviel/control_v11p_sd15_canny/resolve/main/diffusion_pytorch_model.fp16.safetensors"
        );
        let sd3 = BUILTIN[0].1.replace("family = \"sd-turbo\"", "family = \"sd3\"");
        let err = Manifest::parse(&sd3, "x.toml").unwrap_err().to_string();
        assert!(err.contains("sd3") && err.contains("does not run"), "{err}");
        let turbo = find("sd-turbo").unwrap();
        assert_eq!(turbo.license.name, "Stability AI Community License");
        let d = turbo.defaults.clone().unwrap();
        assert_eq!((d.steps, d.cfg, d.sampler.as_str()), (1, 0.0, "turbo"));
        assert_eq!(find("sd-1.5").unwrap().license.name, "CreativeML OpenRAIL-M");
        let unet =
            turbo.files.iter().find(|f| f.component == "unet" && f.path.ends_with(".safetensors")).unwrap();
        assert_eq!(
            turbo.url(unet, None),
            "https://huggingface.co/stabilityai/sd-turbo/resolve/main/unet/diffusion_pytorch_model.fp16.safetensors"
        );
        assert_eq!(
            turbo.url(unet, Some("http://127.0.0.1:9/m/")),
            "http://127.0.0.1:9/m/unet/diffusion_pytorch_model.fp16.safetensors"
        );
        assert!(matches!(find("sd-3"), Err(ManifestError::Unknown(..))));
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let good = include_str!("../../../models/taesd.toml");
        assert!(Manifest::parse(good, "t").is_ok());
        let cases = [
            (good.replace("id = \"taesd\"", "id = \"Bad Id\""), "lower-case"),
            (good.replace("taesd_decoder.safetensors", "../etc/passwd"), "'..'"),
            (good.replace("linear = \"none\"", "linear = \"q3\""), "q3"),
            (good.replace("https://github.com", "http://github.com"), "https"),
            (good.replace("taesd_encoder.safetensors", "taesd_decoder.safetensors"), "twice"),
            (
                good.replace(
                    "[[files]]\npath = \"taesd_encoder.safetensors\"",
                    "[[files]]\nsha256 = \"XYZ\"\npath = \"a\"",
                ),
                "sha256",
            ),
            (format!("{good}\nunknown_key = 1\n"), "unknown"),
        ];
        for (text, expected) in cases {
            let err = Manifest::parse(&text, "bad.toml").unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains("bad.toml"),
                "{err:?} should mention {expected:?}"
            );
        }
    }
}
