//! The CLIP tokenizer: byte-level BPE over lower-cased, whitespace-collapsed text, as the
//! `tokenizer/` folder of every Stable Diffusion checkpoint describes it (vocab.json,
//! merges.txt, special_tokens_map.json). Built on the `tokenizers` crate with the pipeline of
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

impl ClipTokenizer {
    /// From the contents of `vocab.json`, `merges.txt` and (optional) `special_tokens_map.json`.
    pub fn from_files(
        vocab_json: &str,
        merges_txt: &str,
        special_tokens_map: Option<&str>,
    ) -> Result<ClipTokenizer, TokenizerError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| TokenizerError::Files(format!("{what}: {e}"));
        let vocab: Value = serde_json::from_str(vocab_json).map_err(|e| bad("vocab.json", &e))?;
        let vocab_map = vocab.as_object().ok_or_else(|| bad("vocab.json", &"not a JSON object"))?;
        let id = |token: &str| -> Result<u32, TokenizerError> {
            vocab_map
                .get(token)
                .and_then(Value::as_u64)
                .map(|v| v as u32)
                .ok_or_else(|| bad("vocab.json", &format!("has no {token:?}")))
        };
        let (bos, eos) = (id(BOS)?, id(EOS)?);
        // merges.txt: a "#version" line, then one "left right" pair per line. Like CLIP's
        // reference tokenizer, only merges whose result is in the vocabulary count.
        let merges: Vec<[&str; 2]> = merges_txt
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .map(|l| {
                let mut parts = l.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => Ok([a, b]),
                    _ => Err(bad("merges.txt", &format!("line {l:?} is not a pair"))),
                }
            })
            .collect::<Result<_, _>>()?;
        let merges: Vec<[&str; 2]> =
            merges.into_iter().filter(|[a, b]| vocab_map.contains_key(&format!("{a}{b}"))).collect();

        let pad_token = match special_tokens_map {
            Some(text) => {
                let map: Value =
                    serde_json::from_str(text).map_err(|e| bad("special_tokens_map.json", &e))?;
                match &map["pad_token"] {
                    Value::String(s) => s.clone(),
                    Value::Object(o) => o.get("content").and_then(Value::as_str).unwrap_or(EOS).to_string(),
                    _ => EOS.to_string(),
                }
            }
            None => EOS.to_string(),
        };
        let pad = id(&pad_token)?;

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
        let inner: Tokenizer = spec.to_string().parse().map_err(|e| bad("building the tokenizer", &e))?;
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
