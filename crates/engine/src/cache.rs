//! Loaded models, kept between generations: a model's key is the model, where its files came
//! from, the precision and the LoRAs merged into it. The cache holds models up to a byte budget
//! of GPU memory, least recently used out first; a model is always allowed alone, so a budget of
//! 0 keeps exactly one (the right choice where the GPU's memory is unknown or shared: a browser,
//! an integrated GPU). Room is made *before* a load, so the old and the new model never share
//! the GPU beyond the budget.

use std::rc::Rc;

use darkroom_pipeline::Precision;

/// What a loaded model depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelKey {
    model: String,
    rest: String,
}

impl ModelKey {
    /// `source` tells copies of one id apart (a mirror's base URL, a folder's path); `loras` is
    /// [`crate::loras::key`]'s text.
    pub fn new(model: &str, source: &str, precision: &Precision, loras: &str) -> ModelKey {
        ModelKey { model: model.to_string(), rest: format!("{source}|{precision:?}{loras}") }
    }

    /// The model id.
    pub fn model(&self) -> &str {
        &self.model
    }
}

struct Entry<M> {
    key: ModelKey,
    model: Rc<M>,
    bytes: u64,
}

/// The resident models, least recently used first.
pub struct ModelCache<M> {
    budget: u64,
    entries: Vec<Entry<M>>,
}

impl<M> Default for ModelCache<M> {
    /// One model at a time.
    fn default() -> Self {
        ModelCache::with_budget(0)
    }
}

impl<M> ModelCache<M> {
    /// Keeps models while their bytes add up to at most `budget` (one model always).
    pub fn with_budget(budget: u64) -> Self {
        ModelCache { budget, entries: Vec::new() }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The bytes the resident models hold.
    pub fn held(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The model loaded under `key`, if it is resident; it becomes the most recently used.
    pub fn get(&mut self, key: &ModelKey) -> Option<Rc<M>> {
        let i = self.entries.iter().position(|e| &e.key == key)?;
        let entry = self.entries.remove(i);
        let model = entry.model.clone();
        self.entries.push(entry);
        Some(model)
    }

    /// Frees least recently used models until a model of `bytes` fits beside the rest (all of
    /// them when it does not fit at all). Call before loading it.
    pub fn make_room(&mut self, bytes: u64) {
        while !self.entries.is_empty() && self.held().saturating_add(bytes) > self.budget {
            self.entries.remove(0);
        }
    }

    /// Frees every resident model.
    pub fn evict(&mut self) {
        self.entries.clear();
    }

    /// Frees every resident copy of model `id` (its files were deleted).
    pub fn evict_model(&mut self, id: &str) {
        self.entries.retain(|e| e.key.model != id);
    }

    /// Keeps `model` (loaded under `key`, holding `bytes` of GPU memory) as the most recently
    /// used, making room for it first.
    pub fn insert(&mut self, key: ModelKey, model: M, bytes: u64) -> Rc<M> {
        self.entries.retain(|e| e.key != key);
        self.make_room(bytes);
        let model = Rc::new(model);
        self.entries.push(Entry { key, model: model.clone(), bytes });
        model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: &str, loras: &str) -> ModelKey {
        ModelKey::new(model, "", &Precision::F32, loras)
    }

    #[test]
    fn with_no_budget_one_model_is_resident_and_a_new_key_replaces_it() {
        let (a, b) = (key("sd-turbo", ""), key("sd-turbo", "|ink:1@0.5"));
        let mut cache = ModelCache::default();
        assert!(cache.get(&a).is_none());
        cache.insert(a.clone(), 1, 100);
        assert_eq!(cache.get(&a).as_deref(), Some(&1));
        assert!(cache.get(&b).is_none(), "another LoRA set is another model");
        cache.insert(b.clone(), 2, 100);
        assert!(cache.get(&a).is_none(), "one at a time");
        assert_eq!(cache.held(), 100);
        cache.evict();
        assert!(cache.get(&b).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn a_budget_keeps_several_and_frees_the_least_recently_used_first() {
        let (a, b, c) = (key("a", ""), key("b", ""), key("c", ""));
        let mut cache = ModelCache::with_budget(250);
        cache.insert(a.clone(), 'a', 100);
        cache.insert(b.clone(), 'b', 100);
        assert_eq!((cache.len(), cache.held()), (2, 200));
        // Using a makes b the least recently used.
        assert_eq!(cache.get(&a).as_deref(), Some(&'a'));
        cache.insert(c.clone(), 'c', 100);
        assert!(cache.get(&b).is_none(), "b was the least recently used");
        assert!(cache.get(&a).is_some() && cache.get(&c).is_some());
        assert_eq!(cache.held(), 200);
        // Room is made before a load: a model of 200 leaves only what fits beside it.
        cache.make_room(200);
        assert_eq!(cache.len(), 0, "held 200 + 200 > 250: both go");
        // A model larger than the budget is still kept, alone.
        cache.insert(a.clone(), 'a', 1000);
        assert_eq!(cache.len(), 1);
        cache.insert(b.clone(), 'b', 10);
        assert_eq!(cache.len(), 1, "the big one made way");
    }

    #[test]
    fn reinserting_a_key_replaces_it_and_deleting_a_model_frees_its_copies() {
        let mut cache = ModelCache::with_budget(1000);
        cache.insert(key("a", ""), 1, 100);
        cache.insert(key("a", "|ink:1@0.5"), 2, 100);
        cache.insert(key("b", ""), 3, 100);
        cache.insert(key("a", ""), 4, 100);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&key("a", "")).as_deref(), Some(&4));
        cache.evict_model("a");
        assert_eq!(cache.len(), 1);
        assert_eq!(key("b", "").model(), "b");
        assert!(cache.get(&key("b", "")).is_some());
    }
}
