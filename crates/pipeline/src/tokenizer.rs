//! The CLIP tokenizer: byte-level BPE over lower-cased, whitespace-collapsed text, as the
//! `tokenizer/` folder of every Stable Diffusion checkpoint describes it (vocab.json,
//! merges.txt, special_tokens_map.json; or tokenizer.json and tokenizer_config.json as current
//! libraries save it). Built on the `tokenizers` crate with the pipeline of
//! Hugging Face's CLIP `tokenizer.json` (NFC, `\s+` → " ", lowercase; split on CLIP's pattern;
//! byte-level; BPE with the `</w>` end-of-word suffix).

use serde_json::{json, Value};
use tokenizers::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer files: {0}")]
    Files(String),
    #[error("tokenizing {prompt:?}: {detail}")]
    Encode { prompt: String, detail: String },
}

pub struct ClipTokenizer {
    inner: Tokenizer,
    pub bos: u32,
    pub eos: u32,
    /// What fills a 77-token window after the end token: `<|endoftext|>` for SD 1.x, "!" (0)
    /// for SD 2.x's OpenCLIP tokenizer.
    pub pad: u32,
}

/// The Split pattern of CLIP's pre-tokenizer.
const CLIP_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// A special token as a tokenizer config writes it: a string, or an added-token object with
/// `content`.
fn token_name(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The pad token named by `tokenizer_config.json` or `special_tokens_map.json` (the first that
/// names one).
fn configured_pad(configs: &[(&str, Option<&str>)]) -> Result<Option<String>, TokenizerError> {
    for (name, text) in configs {
        if let Some(text) = text {
            let map: Value =
                serde_json::from_str(text).map_err(|e| TokenizerError::Files(format!("{name}: {e}")))?;
            if let Some(token) = token_name(&map["pad_token"]) {
                return Ok(Some(token));
            }
        }
    }
    Ok(None)
}

impl ClipTokenizer {
    /// From the contents of `vocab.json`, `merges.txt` and (optional) `special_tokens_map.json`:
    /// the `tokenizer/` folder as older diffusers and transformers save it.
    pub fn from_files(
        vocab_json: &str,
        merges_txt: &str,
        special_tokens_map: Option<&str>,
    ) -> Result<ClipTokenizer, TokenizerError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| TokenizerError::Files(format!("{what}: {e}"));
        let vocab: Value = serde_json::from_str(vocab_json).map_err(|e| bad("vocab.json", &e))?;
        // merges.txt: a "#version" line, then one "left right" pair per line.
        let merges: Vec<(String, String)> = merges_txt
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .map(|l| {
                let mut parts = l.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                    _ => Err(bad("merges.txt", &format!("line {l:?} is not a pair"))),
                }
            })
            .collect::<Result<_, _>>()?;
        // Without a configured pad token CLIP's own tokenizer pads with the end token.
        let pad = configured_pad(&[("special_tokens_map.json", special_tokens_map)])?
            .unwrap_or_else(|| EOS.to_string());
        ClipTokenizer::from_parts(vocab, merges, &pad, "vocab.json")
    }

    /// From `tokenizer.json` (a Hugging Face fast tokenizer's file) and the optional
    /// `tokenizer_config.json` and `special_tokens_map.json`: the `tokenizer/` folder as current
    /// diffusers and transformers save it, without `vocab.json` and `merges.txt`. The vocabulary
    /// and merges come from its BPE model (merges as "a b" strings or as pairs, both of which
    /// `tokenizers` writes); the pad token from the configs, else the file's own padding.
    pub fn from_tokenizer_json(
        tokenizer_json: &str,
        tokenizer_config: Option<&str>,
        special_tokens_map: Option<&str>,
    ) -> Result<ClipTokenizer, TokenizerError> {
        let bad = |e: &dyn std::fmt::Display| TokenizerError::Files(format!("tokenizer.json: {e}"));
        let mut file: Value = serde_json::from_str(tokenizer_json).map_err(|e| bad(&e))?;
        let model = &mut file["model"];
        if model["type"].as_str().is_some_and(|t| t != "BPE") {
            return Err(bad(&format!("a {} tokenizer, not CLIP's BPE", model["type"])));
        }
        let vocab = model["vocab"].take();
        let merges: Vec<(String, String)> = match &model["merges"] {
            Value::Array(items) => items
                .iter()
                .map(|m| match m {
                    Value::String(s) => match s.split_once(' ') {
                        Some((a, b)) if !b.contains(' ') => Ok((a.to_string(), b.to_string())),
                        _ => Err(bad(&format!("merge {s:?} is not a pair"))),
                    },
                    Value::Array(pair) => match pair.as_slice() {
                        [Value::String(a), Value::String(b)] => Ok((a.clone(), b.clone())),
                        _ => Err(bad(&format!("merge {m} is not a pair"))),
                    },
                    _ => Err(bad(&format!("merge {m} is not a pair"))),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad(&"no BPE merges in model.merges")),
        };
        let pad = configured_pad(&[
            ("tokenizer_config.json", tokenizer_config),
            ("special_tokens_map.json", special_tokens_map),
        ])?
        .or_else(|| file["padding"]["pad_token"].as_str().map(str::to_string))
        .unwrap_or_else(|| EOS.to_string());
        ClipTokenizer::from_parts(vocab, merges, &pad, "tokenizer.json")
    }

    fn from_parts(
        vocab: Value,
        merges: Vec<(String, String)>,
        pad_token: &str,
        source: &str,
    ) -> Result<ClipTokenizer, TokenizerError> {
        let bad = |e: &dyn std::fmt::Display| TokenizerError::Files(format!("{source}: {e}"));
        let vocab_map = vocab.as_object().ok_or_else(|| bad(&"the vocabulary is not a JSON object"))?;
        let id = |token: &str| -> Result<u32, TokenizerError> {
            vocab_map
                .get(token)
                .and_then(Value::as_u64)
                .map(|v| v as u32)
                .ok_or_else(|| bad(&format!("the vocabulary has no {token:?}")))
        };
        let (bos, eos, pad) = (id(BOS)?, id(EOS)?, id(pad_token)?);
        // Like CLIP's reference tokenizer, only merges whose result is in the vocabulary count.
        let merges: Vec<[&str; 2]> = merges
            .iter()
            .filter(|(a, b)| vocab_map.contains_key(&format!("{a}{b}")))
            .map(|(a, b)| [a.as_str(), b.as_str()])
            .collect();

        let added = |id: u32, content: &str| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": true, "special": true})
        };
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [added(bos, BOS), added(eos, EOS)],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
                {"type": "Lowercase"}
            ]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": EOS, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": merges}
        });
        let inner: Tokenizer =
            spec.to_string().parse().map_err(|e| bad(&format!("building the tokenizer: {e}")))?;
        Ok(ClipTokenizer { inner, bos, eos, pad })
    }

    /// The prompt's token ids, without the start and end tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode { prompt: text.to_string(), detail: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of token ids (for showing what a chunk holds).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default().replace("</w>", " ").trim().to_string()
    }
}
