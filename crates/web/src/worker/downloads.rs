//! Downloads into the browser's store: one writer per model across tabs (its Web Lock), each
//! running download registered so that a deletion can cancel it and wait for it.

use std::rc::Rc;

use darkroom_weights::browser::{request_persistence, FetchSource, IdbStore};
use darkroom_weights::fetch::{fetch_model, FetchError, FetchOptions, FetchProgress, DEFAULT_CHUNK};

use super::{fetch_failure, locks, manifest, now_ms, post, Failure, State};
use crate::protocol::{ErrorKind, FromWorker, ModelRef, Stage};

pub(super) async fn download(state: &Rc<State>, id: u32, model: &ModelRef) -> Result<(), Failure> {
    let manifest = manifest(model)?;
    request_persistence().await;
    // One writer per model across tabs; a deletion waits for (and cancels) this download.
    if state.downloads.borrow().contains_key(&manifest.id) {
        return Err((ErrorKind::Busy, format!("{} is already downloading", manifest.name)));
    }
    state.downloads.borrow_mut().insert(manifest.id.clone(), id);
    let registered = Registered { state, model: manifest.id.clone() };
    let _lock = locks::model_lock(&manifest.id, true).await;
    if state.is_cancelled(id) {
        return Err(fetch_failure(FetchError::Cancelled));
    }
    let store = IdbStore::open().await.map_err(fetch_failure)?;
    let cancelled = || state.is_cancelled(id);
    let options =
        FetchOptions { chunk_size: DEFAULT_CHUNK, base_url: model.base.as_deref(), cancelled: &cancelled };
    let started = now_ms();
    let mut first: Option<u64> = None;
    let mut report = |p: &FetchProgress| {
        // The rate counts this session's bytes only, not what was stored before a resume.
        let before = *first.get_or_insert(p.model_done);
        let secs = ((now_ms() - started) / 1000.0).max(1e-3);
        post(
            id,
            FromWorker::Progress {
                stage: Stage::Downloading,
                step: 0,
                total: 0,
                bytes: p.model_done,
                bytes_total: p.model_total,
                rate: (p.model_done - before) as f64 / secs,
            },
            Vec::new(),
        );
    };
    let outcome = fetch_model(
        &FetchSource::with_mirror(model.base.as_deref()),
        &store,
        &manifest,
        &options,
        &mut report,
    )
    .await
    .map_err(fetch_failure);
    drop(registered);
    outcome
}

/// A running download's entry in `State::downloads`, removed however the download ends.
struct Registered<'a> {
    state: &'a State,
    model: String,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.state.downloads.borrow_mut().remove(&self.model);
    }
}
