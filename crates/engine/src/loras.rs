//! A recipe's `<lora:name:weight>` tags resolved to checked LoRA files. Where the files live (a
//! folder and `--lora` files natively, IndexedDB in the browser) is a [`LoraSource`]; what a tag
//! means, when it is missing and how a loaded model's identity depends on its LoRAs is decided
//! here once.

use std::sync::Arc;

use darkroom_pipeline::prompt::LoraTag;
use darkroom_pipeline::AppliedLora;
use darkroom_weights::lora::Lora;

use crate::EngineError;

/// Where LoRA files come from, by the name a prompt tag uses.
#[allow(async_fn_in_trait)]
pub trait LoraSource {
    /// The content identity of the LoRA called `name` (a hash, kept at import where the store
    /// can), or `None` when there is none of that name.
    async fn identity(&self, name: &str) -> Result<Option<String>, EngineError>;
    /// Its bytes, or `None` when there is none of that name.
    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, EngineError>;
    /// What to tell the user when a tag names a LoRA this source lacks.
    fn missing(&self, name: &str) -> String;

    /// The identity of a LoRA whose bytes were just read. By default [`Self::identity`]; a source
    /// that can only hash the bytes overrides it so they are not read a second time.
    async fn identity_of(&self, name: &str, _bytes: &[u8]) -> Result<Option<String>, EngineError> {
        self.identity(name).await
    }
}

fn missing(source: &impl LoraSource, name: &str) -> EngineError {
    EngineError::Input { field: Some("prompt"), message: source.missing(name) }
}

/// What a model loaded with `tags`' LoRAs depends on besides the model: each LoRA's name, content
/// and weight (cheap: no LoRA is read unless its source must hash it).
pub async fn key(source: &impl LoraSource, tags: &[LoraTag]) -> Result<String, EngineError> {
    let mut key = String::new();
    for tag in tags {
        let id = source.identity(&tag.name).await?.ok_or_else(|| missing(source, &tag.name))?;
        key.push_str(&format!("|{}:{id}@{}", tag.name, tag.scale));
    }
    Ok(key)
}

/// The LoRAs `tags` name, read and checked (a file that is not a LoRA, or one for another model
/// family's layout, is an input error naming it).
pub async fn resolve(source: &impl LoraSource, tags: &[LoraTag]) -> Result<Vec<AppliedLora>, EngineError> {
    let mut out = Vec::new();
    for tag in tags {
        let bytes = source.read(&tag.name).await?.ok_or_else(|| missing(source, &tag.name))?;
        let id = source.identity_of(&tag.name, &bytes).await?.ok_or_else(|| missing(source, &tag.name))?;
        let lora = Lora::from_bytes(&bytes).map_err(|e| EngineError::Input {
            field: Some("prompt"),
            message: format!("LoRA `{}`: {e}", tag.name),
        })?;
        out.push(AppliedLora { name: tag.name.clone(), lora: Arc::new(lora), scale: tag.scale, id });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Memory(HashMap<String, Vec<u8>>);

    impl LoraSource for Memory {
        async fn identity(&self, name: &str) -> Result<Option<String>, EngineError> {
            Ok(self.0.get(name).map(|b| darkroom_pipeline::short_hash(b)))
        }
        async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, EngineError> {
            Ok(self.0.get(name).cloned())
        }
        fn missing(&self, name: &str) -> String {
            format!("no LoRA called {name}")
        }
    }

    fn tag(name: &str, scale: f32) -> LoraTag {
        LoraTag { name: name.into(), scale }
    }

    #[test]
    fn keys_follow_name_content_and_weight_and_missing_ones_are_input_errors() {
        let source = Memory(HashMap::from([
            ("ink".to_string(), b"one".to_vec()),
            ("oil".to_string(), b"two".to_vec()),
        ]));
        let key = |tags: &[LoraTag]| pollster::block_on(super::key(&source, tags));
        let base = key(&[tag("ink", 0.5)]).unwrap();
        assert_ne!(base, key(&[tag("ink", 0.6)]).unwrap(), "weight");
        assert_ne!(base, key(&[tag("oil", 0.5)]).unwrap(), "name and content");
        assert_eq!(key(&[]).unwrap(), "");
        let err = key(&[tag("ghost", 1.0)]).unwrap_err();
        assert_eq!(err, EngineError::Input { field: Some("prompt"), message: "no LoRA called ghost".into() });
        // A file that is not a LoRA is refused when resolved, by name.
        let Err(err) = pollster::block_on(resolve(&source, &[tag("ink", 1.0)])) else { panic!("not a LoRA") };
        assert!(
            matches!(&err, EngineError::Input { message, .. } if message.contains("LoRA `ink`")),
            "{err}"
        );
    }
}
