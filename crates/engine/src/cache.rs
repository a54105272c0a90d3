//! The loaded model, kept between generations and replaced when a request needs another: its
//! key is the model, where its files came from, the precision and the LoRAs merged into it.
//! One model is resident at a time — an SD model takes most of a consumer GPU's memory — so a
//! changed key frees the old one before the next loads.

use std::rc::Rc;

use darkroom_pipeline::Precision;

/// What a loaded model depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelKey(String);

impl ModelKey {
    /// `source` tells copies of one id apart (a mirror's base URL, a folder's path); `loras` is
    /// [`crate::loras::key`]'s text.
    pub fn new(model: &str, source: &str, precision: &Precision, loras: &str) -> ModelKey {
        ModelKey(format!("{model}|{source}|{precision:?}{loras}"))
    }
}

/// The resident model, if any.
pub struct ModelCache<M> {
    loaded: Option<(ModelKey, Rc<M>)>,
}

impl<M> Default for ModelCache<M> {
    fn default() -> Self {
        ModelCache { loaded: None }
    }
}

impl<M> ModelCache<M> {
    /// The model loaded under `key`, if it is the resident one.
    pub fn get(&self, key: &ModelKey) -> Option<Rc<M>> {
        self.loaded.as_ref().filter(|(k, _)| k == key).map(|(_, m)| m.clone())
    }

    /// Frees the resident model (before loading another, so the two never share the GPU).
    pub fn evict(&mut self) {
        self.loaded = None;
    }

    pub fn insert(&mut self, key: ModelKey, model: M) -> Rc<M> {
        let model = Rc::new(model);
        self.loaded = Some((key, model.clone()));
        model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_model_is_resident_and_a_new_key_replaces_it() {
        let p = Precision::F32;
        let (a, b) = (ModelKey::new("sd-turbo", "", &p, ""), ModelKey::new("sd-turbo", "", &p, "|ink:1@0.5"));
        let mut cache = ModelCache::default();
        assert!(cache.get(&a).is_none());
        cache.insert(a.clone(), 1);
        assert_eq!(cache.get(&a).as_deref(), Some(&1));
        assert!(cache.get(&b).is_none(), "another LoRA set is another model");
        cache.insert(b.clone(), 2);
        assert!(cache.get(&a).is_none(), "one at a time");
        cache.evict();
        assert!(cache.get(&b).is_none());
    }
}
