use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::components::lora_manager::{refresh_loras, AddOn, AddOnManager};
use crate::protocol::{ErrorKind, FromWorker, StoreOp, StoreReply, ToWorker};
use crate::state::{human_bytes, human_duration, AppState, Download, ModelEntry};

/// Whether the user accepted a model's license (asked once per model, remembered on this device).
fn license_accepted(id: &str) -> bool {
    storage().and_then(|s| s.get_item(&format!("darkroom.license.{id}")).ok().flatten()).is_some()
}

fn accept_license(id: &str) {
    if let Some(s) = storage() {
        let _ = s.set_item(&format!("darkroom.license.{id}"), "accepted");
    }
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// Starts (or resumes) a model's download in the worker and follows its progress.
pub fn start_download(state: AppState, entry: &ModelEntry) {
    let Some(worker) = state.worker.get_value() else { return };
    let download = entry.download;
    let stored = entry.stored;
    let before = stored.get_untracked();
    let request = ToWorker::Download { model: entry.model_ref.clone() };
    let id = worker.request(request, Vec::new(), move |message| match message.body {
        FromWorker::Progress { bytes, bytes_total, rate, .. } => {
            download.update(|d| {
                if let Some(d) = d {
                    (d.bytes, d.total, d.rate) = (bytes, bytes_total, rate);
                }
            });
            stored.set(crate::state::Stored { bytes, total: bytes_total, ..Default::default() });
        }
        FromWorker::Downloaded => {
            download.set(None);
            stored.update(|s| {
                s.complete = true;
                s.bytes = s.total.max(s.bytes);
            });
            // Reads the sealed files' records (and the storage estimate) back.
            refresh_stored(state);
            announce_stored_change();
        }
        FromWorker::Error { kind, message } => {
            let error = (kind != ErrorKind::Cancelled).then_some(message);
            download.update(|d| {
                if let Some(d) = d {
                    d.id = None;
                    d.error = error;
                }
            });
            // What is stored now (another tab may have deleted the model: that cancels this).
            refresh_stored(state);
        }
        _ => {}
    });
    download.set(Some(Download {
        id: Some(id),
        bytes: before.bytes,
        total: before.total,
        rate: 0.0,
        error: None,
    }));
}

/// Where the pages of this origin (tabs, the widget on Darkroom's storage) tell each other that
/// the stored models changed, so none shows a model another deleted as still there.
const STORED_CHANNEL: &str = "darkroom-stored";

/// Tells the other pages that the stored models changed (a deletion, a finished download).
pub fn announce_stored_change() {
    crate::broadcast::post(STORED_CHANNEL, &"changed".into());
}

/// Reads the stored models again whenever another page says they changed (for the page's
/// lifetime).
pub fn follow_stored_changes(state: AppState) {
    crate::broadcast::listen(STORED_CHANNEL, move |_| refresh_stored(state));
}

/// Reads what the browser holds of every model, and the storage estimate.
pub fn refresh_stored(state: AppState) {
    spawn_local(async move {
        let Ok(store) = darkroom_weights::browser::IdbStore::open().await else { return };
        let Ok(files) = store.files().await else { return };
        for entry in state.models.get_untracked() {
            let prefix = format!("{}/", entry.manifest.id);
            let (mut bytes, mut complete_files, mut corrupt) = (0u64, 0usize, false);
            for (key, s) in &files {
                if let Some(path) = key.strip_prefix(&prefix) {
                    if let Some(f) = entry.manifest.files.iter().find(|f| f.path == path) {
                        bytes += if s.complete {
                            s.total.unwrap_or(0)
                        } else {
                            s.chunks * darkroom_weights::fetch::DEFAULT_CHUNK
                        };
                        complete_files += s.complete as usize;
                        corrupt |= s.complete && f.size.is_some() && f.size != s.total;
                    }
                }
            }
            let (known, _) = entry.manifest.download_size();
            let complete = complete_files == entry.manifest.files.len();
            let total = if complete { bytes } else { known.max(bytes) };
            entry.stored.set(crate::state::Stored { bytes, total, complete: complete && !corrupt, corrupt });
            entry.integrity.set(if complete_files > 0 {
                Some(integrity(&store, &entry.manifest).await)
            } else {
                None
            });
        }
        refresh_loras(state);
        refresh_storage(state);
    });
}

/// A stored model's pinned commit and its files' integrity records.
async fn integrity(
    store: &darkroom_weights::browser::IdbStore,
    m: &darkroom_weights::Manifest,
) -> crate::state::Integrity {
    use darkroom_weights::fetch::ChunkStore;
    let mut files = Vec::new();
    for f in &m.files {
        let record = store.record(&format!("{}/{}", m.id, f.path)).await.ok().flatten();
        files.push((f.path.clone(), record));
    }
    crate::state::Integrity { commit: store.pinned(&m.id).await.ok().flatten(), files }
}

fn refresh_storage(state: AppState) {
    spawn_local(async move {
        if let Ok(estimate) = darkroom_weights::browser::storage_estimate().await {
            state.storage.set(estimate);
        }
    });
}

fn delete(state: AppState, entry: ModelEntry) {
    let Some(worker) = state.worker.get_value() else { return };
    let op = StoreOp::DeleteModel { id: entry.manifest.id.clone() };
    worker.store_then(op, Vec::new(), move |outcome| {
        entry.download.set(None);
        match outcome {
            Err(e) => state.error.set(Some(format!("{} could not be deleted: {e}", entry.manifest.name))),
            // An import has nothing to download again: it leaves the list.
            Ok(_) if entry.imported() => {
                state.models.update(|list| list.retain(|m| m.manifest.id != entry.manifest.id))
            }
            Ok(_) => {}
        }
        refresh_stored(state);
        announce_stored_change();
    });
}

/// Deletes every model and LoRA this browser holds, after a second click that says how much.
#[component]
fn DeleteAll() -> impl IntoView {
    let state = expect_context::<AppState>();
    let asking = RwSignal::new(false);
    let held =
        move || state.models.get().into_iter().filter(|m| m.stored.get().bytes > 0).collect::<Vec<_>>();
    let confirm = move |_| {
        asking.set(false);
        for entry in held() {
            delete(state, entry);
        }
        if let Some(worker) = state.worker.get_value() {
            for lora in state.loras.get_untracked() {
                let op = StoreOp::DeleteLora { name: lora.name };
                worker.store_then(op, Vec::new(), move |_| refresh_loras(state));
            }
            for embedding in state.embeddings.get_untracked() {
                let op = StoreOp::DeleteEmbedding { name: embedding.name };
                worker.store_then(op, Vec::new(), move |_| refresh_loras(state));
            }
        }
    };
    view! {
        <div class="delete-all">
            <Show when=move || !held().is_empty() || !state.loras.get().is_empty() || !state.embeddings.get().is_empty()>
                <Show when=move || asking.get() fallback=move || view! {
                    <button id="delete-all" on:click=move |_| asking.set(true)>"Delete all models…"</button>
                }>
                    <span>{move || {
                        let list = held();
                        let (loras, embeddings) = (state.loras.get(), state.embeddings.get());
                        let bytes: u64 = list.iter().map(|m| m.stored.get().bytes).sum::<u64>()
                            + loras.iter().chain(&embeddings).map(|l| l.bytes).sum::<u64>();
                        let count = |n: usize, one: &str, many: &str| match n {
                            0 => None,
                            1 => Some(format!("1 {one}")),
                            n => Some(format!("{n} {many}")),
                        };
                        let extras: Vec<String> = [count(loras.len(), "LoRA", "LoRAs"), count(embeddings.len(), "embedding", "embeddings")]
                            .into_iter()
                            .flatten()
                            .collect();
                        let what = if extras.is_empty() {
                            format!("{} models", list.len())
                        } else {
                            format!("{} models and {}", list.len(), extras.join(" and "))
                        };
                        format!("Delete {what} ({}) from this browser? ", human_bytes(bytes))
                    }}</span>
                    <button id="delete-all-confirm" class="danger" on:click=confirm>"Delete all"</button>
                    <button on:click=move |_| asking.set(false)>"Keep them"</button>
                </Show>
            </Show>
        </div>
    }
}

/// Import a single-file checkpoint from disk on a downloaded base model's configs.
#[component]
fn ImportForm() -> impl IntoView {
    let state = expect_context::<AppState>();
    let file = StoredValue::new_local(None::<web_sys::File>);
    let id = RwSignal::new(String::new());
    let base = RwSignal::new(String::new());
    let progress = RwSignal::new(None::<(u64, u64)>);
    let outcome = RwSignal::new(None::<Result<String, String>>);
    let bases = move || {
        state
            .models
            .get()
            .into_iter()
            .filter(|m| {
                m.generates()
                    && m.stored.get().complete
                    && (m.manifest.family.is_sd1() || m.manifest.family.is_sdxl())
            })
            .collect::<Vec<_>>()
    };
    let pick = move |ev: leptos::ev::Event| {
        let chosen = crate::components::lora_manager::picked_file(&ev);
        if let Some(f) = &chosen {
            id.set(darkroom_weights::checkpoint::model_id(&f.name()));
        }
        file.set_value(chosen);
        outcome.set(None);
    };
    let start = move |_| {
        let Some(f) = file.get_value() else {
            outcome.set(Some(Err("Pick a .safetensors checkpoint first.".into())));
            return;
        };
        let chosen_base = if base.get_untracked().is_empty() {
            bases().first().map(|m| m.manifest.id.clone())
        } else {
            Some(base.get_untracked())
        };
        let Some(base_entry) = chosen_base.and_then(|b| state.model(&b)) else {
            outcome.set(Some(Err(
                "Download an SD 1.x or SDXL model first: an import takes its configs and tokenizers.".into(),
            )));
            return;
        };
        let new_id = id.get_untracked();
        if state.model(&new_id).is_some() {
            outcome.set(Some(Err(format!("A model called {new_id} exists already: pick another name."))));
            return;
        }
        let Some(worker) = state.worker.get_value() else {
            outcome.set(Some(Err("The worker that stores files is not running.".into())));
            return;
        };
        progress.set(Some((0, f.size() as u64)));
        outcome.set(None);
        let op = StoreOp::ImportCheckpoint { base: base_entry.model_ref.clone(), id: new_id };
        worker.store(op, vec![f.into()], move |message| {
            let result = match message.body {
                FromWorker::Progress { bytes, bytes_total, .. } => {
                    progress.set(Some((bytes, bytes_total)));
                    return;
                }
                FromWorker::Stored(StoreReply::Imported { manifest_toml }) => Ok(manifest_toml),
                FromWorker::Error { message, .. } => Err(message),
                _ => return,
            };
            progress.set(None);
            match result
                .and_then(|toml| crate::state::ModelEntry::parse(&toml, crate::import::MANIFEST_FILE, None))
            {
                Ok(entry) => {
                    let name = entry.manifest.name.clone();
                    state.models.update(|list| list.insert(0, entry));
                    refresh_stored(state);
                    outcome.set(Some(Ok(format!("{name} is ready: pick it under Generate."))));
                }
                Err(e) => outcome.set(Some(Err(e))),
            }
        });
    };
    view! {
        <div class="import" id="import">
            <h3>"Import a checkpoint"</h3>
            <p class="muted small">"A single-file SD 1.x or SDXL checkpoint (.safetensors, as model sites share them) is copied from your disk into this browser, on the configs and tokenizers of a downloaded base model of its family (SD 1.5 for SD 1.x, SDXL for SDXL). Nothing is uploaded."</p>
            <div class="row">
                <label class="field">
                    <span>"Checkpoint"</span>
                    <input id="import-file" type="file" accept=".safetensors" on:change=pick />
                </label>
                <label class="field">
                    <span>"Base model"</span>
                    <select id="import-base" on:change=move |ev| base.set(event_target_value(&ev))>
                        {move || bases().into_iter().map(|m| view! { <option value=m.manifest.id.clone()>{m.manifest.name.clone()}</option> }).collect_view()}
                    </select>
                </label>
                <label class="field">
                    <span>"Name"</span>
                    <input id="import-id" type="text" prop:value=move || id.get() on:input=move |ev| id.set(event_target_value(&ev)) />
                </label>
                <button id="import-button" class="primary" disabled=move || progress.get().is_some() on:click=start>"Import"</button>
            </div>
            {move || progress.get().map(|(done, total)| view! {
                <progress max=total as f64 value=done as f64></progress>
                <p class="muted small">{format!("{} of {}", human_bytes(done), human_bytes(total))}</p>
            })}
            {move || outcome.get().map(|r| match r {
                Ok(text) => view! { <p class="ok" id="import-result">{text}</p> }.into_any(),
                Err(e) => view! { <p class="error" id="import-result" role="alert">{e}</p> }.into_any(),
            })}
        </div>
    }
}

/// The models this app knows, what this browser holds of each, and their downloads.
#[component]
pub fn ModelManager() -> impl IntoView {
    let state = expect_context::<AppState>();
    let storage_line = move || match state.storage.get() {
        Some((used, quota)) => format!(
            "This site stores {} on this device; the browser allows about {} more.",
            human_bytes(used),
            human_bytes(quota.saturating_sub(used))
        ),
        None => "The browser does not say how much storage this site may use.".into(),
    };
    view! {
        <section class="panel" id="models">
            <h2>"Models"</h2>
            <p class="muted">
                "Weights download once from the model's host into this browser and never leave it. "
                {storage_line}
            </p>
            <ul class="model-list">
                <For
                    each=move || state.models.get()
                    key=|m| m.manifest.id.clone()
                    children=move |entry| view! { <ModelRow entry=entry /> }
                />
            </ul>
            <ImportForm />
            <AddOnManager kind=AddOn::Lora />
            <AddOnManager kind=AddOn::Embedding />
            <DeleteAll />
        </section>
    }
}

/// One model: name, size, license, state, and its actions.
#[component]
fn ModelRow(
    /// The model shown.
    entry: ModelEntry,
) -> impl IntoView {
    let state = expect_context::<AppState>();
    let asking_license = RwSignal::new(false);
    let id = entry.manifest.id.clone();
    let m = entry.manifest.clone();
    let (size, exact) = m.download_size();
    let size_text = if exact {
        human_bytes(size)
    } else if let Some(approx) = m.approx_size {
        format!("about {}", human_bytes(approx))
    } else if size == 0 {
        "size unknown until downloaded".to_string()
    } else {
        format!("at least {}", human_bytes(size))
    };
    let stored = entry.stored;
    let download = entry.download;
    let state_text = move || {
        let s = stored.get();
        match download.get() {
            Some(Download { id: Some(_), bytes, total, rate, .. }) => {
                let left = if rate > 0.0 && total > bytes {
                    format!(", about {} left", human_duration((total - bytes) as f64 / rate))
                } else {
                    String::new()
                };
                format!(
                    "downloading: {} of {} at {}/s{left}",
                    human_bytes(bytes),
                    human_bytes(total),
                    human_bytes(rate as u64)
                )
            }
            _ if s.corrupt => {
                "damaged: a stored file is not the size the manifest says; delete it and download again"
                    .into()
            }
            _ if s.complete => format!("on this device ({})", human_bytes(s.bytes)),
            _ if s.bytes > 0 => format!(
                "partly downloaded ({} of {}): resume to finish",
                human_bytes(s.bytes),
                human_bytes(s.total)
            ),
            _ => "not downloaded".into(),
        }
    };
    let data_state = move || match (download.get(), stored.get()) {
        (Some(Download { id: Some(_), .. }), _) => "downloading",
        (_, s) if s.corrupt => "corrupt",
        (_, s) if s.complete => "complete",
        (_, s) if s.bytes > 0 => "partial",
        _ => "absent",
    };
    let fraction = move || {
        let (bytes, total) = match download.get() {
            Some(d) if d.id.is_some() => (d.bytes, d.total),
            _ => (stored.get().bytes, stored.get().total),
        };
        if total == 0 {
            0.0
        } else {
            bytes as f64 / total as f64
        }
    };
    let downloading = move || download.get().is_some_and(|d| d.id.is_some());
    let error = move || download.get().and_then(|d| d.error);
    let entry_for_start = entry.clone();
    let start = move || {
        if license_accepted(&entry_for_start.manifest.id) {
            start_download(state, &entry_for_start);
        } else {
            asking_license.set(true);
        }
    };
    let entry_for_accept = entry.clone();
    let accept = move |_| {
        accept_license(&entry_for_accept.manifest.id);
        asking_license.set(false);
        start_download(state, &entry_for_accept);
    };
    let pause = move |_| {
        if let (Some(worker), Some(Download { id: Some(id), .. })) =
            (state.worker.get_value(), download.get_untracked())
        {
            worker.cancel(id);
        }
    };
    let entry_for_delete = entry.clone();
    let remove = move |_| delete(state, entry_for_delete.clone());
    let use_it = {
        let manifest = entry.manifest.clone();
        move |_| {
            state.settings.apply_defaults(&manifest);
            state.tab.set(crate::state::Tab::Generate);
        }
    };
    let generates = entry.generates();
    let entry_integrity = entry.integrity;
    let start_click = start.clone();
    view! {
        <li class="model" data-model=id.clone() data-state=data_state>
            <div class="model-head">
                <strong>{m.name.clone()}</strong>
                <span class="muted">" · " {size_text}</span>
            </div>
            <p class="muted small">{m.description.clone()}</p>
            <progress max="1" value=fraction class:hidden=move || stored.get().complete && !downloading()></progress>
            <p class="model-state">{state_text}</p>
            {move || error().map(|e| view! {
                <p class="error" role="alert">{e}" — check the connection and press Resume; what is stored is kept."</p>
            })}
            <Show when=move || asking_license.get()>
                <div class="license" role="dialog" aria-label="License">
                    <p>
                        {format!("{} is published under ", m.name)}
                        <a href=m.license.url.clone() target="_blank" rel="noopener noreferrer">{m.license.name.clone()}</a>
                        ". Read it before you download; accepting is remembered on this device."
                    </p>
                    <button class="primary" on:click=accept.clone()>"Accept and download"</button>
                    <button on:click=move |_| asking_license.set(false)>"Not now"</button>
                </div>
            </Show>
            {move || entry_integrity.get().filter(|_| stored.get().complete).map(|i| view! {
                <details class="integrity">
                    <summary>"Files and checksums"</summary>
                    <p class="small">{match &i.commit {
                        Some(c) => format!("Pinned to commit {c}: every file came from it."),
                        None => "No pinned commit (the server named none, or the model was imported here).".to_string(),
                    }}</p>
                    <table class="small">
                        <thead><tr><th>"File"</th><th>"Bytes"</th><th>"SHA-256"</th></tr></thead>
                        <tbody>{i.files.into_iter().map(|(path, record)| match record {
                            Some(r) => view! { <tr><td>{path}</td><td>{r.size.to_string()}</td><td class="hash">{r.sha256}</td></tr> }.into_any(),
                            None => view! { <tr><td>{path}</td><td>"–"</td><td>"not hashed yet (stored before checksums were kept)"</td></tr> }.into_any(),
                        }).collect_view()}</tbody>
                    </table>
                </details>
            })}
            <div class="actions">
                <Show when=move || !stored.get().complete && !downloading()>
                    <button class="primary download" on:click={
                        let start = start_click.clone();
                        move |_| start()
                    }>{move || if stored.get().bytes > 0 { "Resume" } else { "Download" }}</button>
                </Show>
                <Show when=downloading>
                    <button class="pause" on:click=pause>"Pause"</button>
                </Show>
                <Show when=move || stored.get().complete && generates>
                    <button class="use" on:click=use_it.clone()>"Use"</button>
                </Show>
                <Show when=move || (stored.get().bytes > 0 || stored.get().complete) && !downloading()>
                    <button class="delete" on:click=remove.clone()>"Delete"</button>
                </Show>
            </div>
        </li>
    }
}
