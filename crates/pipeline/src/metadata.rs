//! Generation parameters in A1111's "infotext" format, stored in a PNG `parameters` text chunk
//! so A1111, ComfyUI and other readers recognise our images, and read back from any PNG that
//! carries one (drop a PNG → its settings).
//!
//! ```text
//! a photograph of an astronaut riding a horse
//! Negative prompt: blurry, lowres
//! Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x512, Model: sd-turbo
//! ```

use std::io::Cursor;

/// The settings that reproduce an image.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: u32,
    /// A1111's display name ("Euler a", "DPM++ 2M Karras", …).
    pub sampler: String,
    pub cfg_scale: f32,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub model: Option<String>,
    pub model_hash: Option<String>,
    /// Any other `key: value` pairs, in order (img2img's "Denoising strength", …).
    pub extra: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetadataError {
    #[error("this is not a PNG file, or it is damaged: {0}")]
    NotPng(String),
    #[error("the PNG carries no generation parameters")]
    NoParameters,
    #[error("the parameters are not in A1111's format: {0}")]
    Malformed(String),
}

/// Formats a number as A1111 does: integers without a decimal point, others as written.
fn number(v: f32) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A value quoted when it would otherwise break the comma-separated line.
fn quote(v: &str) -> String {
    if v.contains([',', ':', '"', '\n']) {
        format!("{:?}", v)
    } else {
        v.to_string()
    }
}

impl GenerationParams {
    pub fn to_infotext(&self) -> String {
        let mut fields = vec![
            ("Steps".to_string(), self.steps.to_string()),
            ("Sampler".to_string(), self.sampler.clone()),
            ("CFG scale".to_string(), number(self.cfg_scale)),
            ("Seed".to_string(), self.seed.to_string()),
            ("Size".to_string(), format!("{}x{}", self.width, self.height)),
        ];
        if let Some(hash) = &self.model_hash {
            fields.push(("Model hash".into(), hash.clone()));
        }
        if let Some(model) = &self.model {
            fields.push(("Model".into(), model.clone()));
        }
        fields.extend(self.extra.iter().cloned());
        let line = fields.iter().map(|(k, v)| format!("{k}: {}", quote(v))).collect::<Vec<_>>().join(", ");
        let mut text = self.prompt.clone();
        if !self.negative_prompt.is_empty() {
            text.push_str(&format!("\nNegative prompt: {}", self.negative_prompt));
        }
        text.push('\n');
        text.push_str(&line);
        text
    }

    /// Parses A1111 infotext: the prompt, an optional `Negative prompt:` part, and a last line
    /// of `key: value` pairs (values may be double-quoted).
    pub fn parse_infotext(text: &str) -> Result<GenerationParams, MetadataError> {
        let text = text.trim_end();
        let (body, last) = text.rsplit_once('\n').unwrap_or(("", text));
        let fields = parse_fields(last);
        if fields.len() < 3 {
            return Err(MetadataError::Malformed("the last line is not a list of settings".into()));
        }
        let (prompt, negative) = match body.find("Negative prompt:") {
            Some(i) if i == 0 || body[..i].ends_with('\n') => (
                body[..i].trim_end_matches('\n').to_string(),
                body[i + "Negative prompt:".len()..].trim().to_string(),
            ),
            _ => (body.to_string(), String::new()),
        };
        let mut params = GenerationParams {
            prompt,
            negative_prompt: negative,
            steps: 20,
            sampler: "Euler a".into(),
            cfg_scale: 7.0,
            seed: 0,
            width: 512,
            height: 512,
            model: None,
            model_hash: None,
            extra: Vec::new(),
        };
        let bad = |key: &str, value: &str| MetadataError::Malformed(format!("{key}: {value:?}"));
        for (key, value) in fields {
            match key.as_str() {
                "Steps" => params.steps = value.parse().map_err(|_| bad(&key, &value))?,
                "Sampler" => params.sampler = value,
                "CFG scale" => params.cfg_scale = value.parse().map_err(|_| bad(&key, &value))?,
                "Seed" => params.seed = value.parse().map_err(|_| bad(&key, &value))?,
                "Size" => {
                    let (w, h) = value.split_once('x').ok_or_else(|| bad(&key, &value))?;
                    params.width = w.trim().parse().map_err(|_| bad(&key, &value))?;
                    params.height = h.trim().parse().map_err(|_| bad(&key, &value))?;
                }
                "Model" => params.model = Some(value),
                "Model hash" => params.model_hash = Some(value),
                _ => params.extra.push((key, value)),
            }
        }
        Ok(params)
    }
}

/// `key: value, key: "quoted, value", …` → pairs. Text that is not a pair is skipped, as A1111 does.
fn parse_fields(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let Some(colon) = rest.find(':') else { break };
        let key = rest[..colon].trim().to_string();
        let after = rest[colon + 1..].trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            // A JSON-style quoted string: find the closing quote that is not escaped.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let Some(end) = end else { break };
            let raw = &quoted[..end];
            let value = serde_unescape(raw);
            (value, quoted[end + 1..].trim_start().strip_prefix(',').unwrap_or(&quoted[end + 1..]))
        } else {
            match after.find(',') {
                Some(comma) => (after[..comma].trim().to_string(), &after[comma + 1..]),
                None => (after.trim().to_string(), ""),
            }
        };
        if !key.is_empty() && !key.contains(',') {
            out.push((key, value));
        }
        rest = remaining.trim_start();
    }
    out
}

/// Undoes the escapes `quote` writes (`\"`, `\\`, `\n`).
fn serde_unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Encodes RGBA8 pixels as a PNG carrying `params` in a `parameters` chunk (tEXt when the text is
/// Latin-1, iTXt otherwise, as A1111 writes it).
pub fn encode_png(
    rgba: &[u8],
    width: u32,
    height: u32,
    params: &GenerationParams,
) -> Result<Vec<u8>, MetadataError> {
    encode(rgba, width, height, Some(params))
}

/// An RGBA image as PNG without parameters (a control map, an upscaled copy).
pub fn encode_png_plain(rgba: &[u8], width: u32, height: u32) -> Result<Vec<u8>, MetadataError> {
    encode(rgba, width, height, None)
}

fn encode(
    rgba: &[u8],
    width: u32,
    height: u32,
    params: Option<&GenerationParams>,
) -> Result<Vec<u8>, MetadataError> {
    if rgba.len() != width as usize * height as usize * 4 {
        return Err(MetadataError::NotPng(format!(
            "{width}x{height} needs {} bytes of RGBA",
            width as usize * height as usize * 4
        )));
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    if let Some(params) = params {
        let text = params.to_infotext();
        let result = if text.chars().all(|c| (c as u32) < 256) {
            encoder.add_text_chunk("parameters".into(), text)
        } else {
            encoder.add_itxt_chunk("parameters".into(), text)
        };
        result.map_err(|e| MetadataError::NotPng(e.to_string()))?;
    }
    let mut writer = encoder.write_header().map_err(|e| MetadataError::NotPng(e.to_string()))?;
    writer.write_image_data(rgba).map_err(|e| MetadataError::NotPng(e.to_string()))?;
    writer.finish().map_err(|e| MetadataError::NotPng(e.to_string()))?;
    Ok(out)
}

/// The `parameters` text of a PNG, from a tEXt, zTXt or iTXt chunk.
pub fn read_parameters(png_bytes: &[u8]) -> Result<String, MetadataError> {
    let decoder = png::Decoder::new(Cursor::new(png_bytes));
    let reader = decoder.read_info().map_err(|e| MetadataError::NotPng(e.to_string()))?;
    let info = reader.info();
    if let Some(chunk) = info.uncompressed_latin1_text.iter().find(|c| c.keyword == "parameters") {
        return Ok(chunk.text.clone());
    }
    if let Some(chunk) = info.compressed_latin1_text.iter().find(|c| c.keyword == "parameters") {
        return chunk.get_text().map_err(|e| MetadataError::NotPng(e.to_string()));
    }
    if let Some(chunk) = info.utf8_text.iter().find(|c| c.keyword == "parameters") {
        return chunk.get_text().map_err(|e| MetadataError::NotPng(e.to_string()));
    }
    Err(MetadataError::NoParameters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GenerationParams {
        GenerationParams {
            prompt: "a photograph of an astronaut riding a horse, (detailed:1.2)".into(),
            negative_prompt: "blurry, lowres".into(),
            steps: 25,
            sampler: "DPM++ 2M Karras".into(),
            cfg_scale: 7.5,
            seed: 3_141_592_653,
            width: 768,
            height: 512,
            model: Some("sd-turbo".into()),
            model_hash: Some("1b6d3e4a5c".into()),
            extra: vec![("Denoising strength".into(), "0.6".into()), ("Note".into(), "a, b".into())],
        }
    }

    #[test]
    fn infotext_is_a1111s_layout() {
        let text = sample().to_infotext();
        assert_eq!(
            text,
            "a photograph of an astronaut riding a horse, (detailed:1.2)\n\
             Negative prompt: blurry, lowres\n\
             Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3141592653, Size: 768x512, \
             Model hash: 1b6d3e4a5c, Model: sd-turbo, Denoising strength: 0.6, Note: \"a, b\""
        );
    }

    #[test]
    fn infotext_round_trips() {
        let params = sample();
        assert_eq!(GenerationParams::parse_infotext(&params.to_infotext()), Ok(params));
        let plain = GenerationParams {
            negative_prompt: String::new(),
            model: None,
            model_hash: None,
            extra: vec![],
            ..sample()
        };
        assert_eq!(GenerationParams::parse_infotext(&plain.to_infotext()), Ok(plain));
    }

    #[test]
    fn parses_an_infotext_written_by_a1111() {
        // Multi-line prompt and negative prompt, integer CFG, extra fields.
        let text = "masterpiece, a cat\nsitting on a mat\nNegative prompt: dog,\nugly\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, Version: v1.10.1";
        let p = GenerationParams::parse_infotext(text).unwrap();
        assert_eq!(p.prompt, "masterpiece, a cat\nsitting on a mat");
        assert_eq!(p.negative_prompt, "dog,\nugly");
        assert_eq!((p.steps, p.sampler.as_str(), p.cfg_scale, p.seed), (30, "Euler a", 7.0, 42));
        assert_eq!((p.width, p.height), (512, 768));
        assert_eq!(p.model.as_deref(), Some("v1-5-pruned-emaonly"));
        assert_eq!(p.extra, vec![("Clip skip".into(), "2".into()), ("Version".into(), "v1.10.1".into())]);
    }

    #[test]
    fn malformed_text_is_an_error() {
        assert!(GenerationParams::parse_infotext("just a prompt").is_err());
        assert!(GenerationParams::parse_infotext("p\nSteps: many, Sampler: x, Seed: 1").is_err());
    }

    #[test]
    fn png_carries_the_parameters_in_latin1_and_utf8() {
        let pixels = vec![200u8; 3 * 2 * 4];
        let params = sample();
        let png = encode_png(&pixels, 3, 2, &params).unwrap();
        let text = read_parameters(&png).unwrap();
        assert_eq!(GenerationParams::parse_infotext(&text).as_ref(), Ok(&params));
        let unicode = GenerationParams { prompt: "猫 in a café ☕".into(), ..sample() };
        let png = encode_png(&pixels, 3, 2, &unicode).unwrap();
        assert_eq!(
            GenerationParams::parse_infotext(&read_parameters(&png).unwrap()).unwrap().prompt,
            "猫 in a café ☕"
        );
        assert!(matches!(read_parameters(b"not a png"), Err(MetadataError::NotPng(_))));
        let bare = {
            let mut out = Vec::new();
            let mut e = png::Encoder::new(&mut out, 1, 1);
            e.set_color(png::ColorType::Rgba);
            e.write_header().unwrap().write_image_data(&[0, 0, 0, 255]).unwrap();
            out
        };
        assert_eq!(read_parameters(&bare), Err(MetadataError::NoParameters));
        assert!(encode_png(&pixels, 4, 2, &params).is_err());
    }
}
