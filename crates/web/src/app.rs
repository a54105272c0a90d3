//! The app a user meets: generate, models, gallery, briefs, GPU — one tab each — over the generation
//! worker. `?manifest=<url>[&base=<url>]` (repeatable) adds a model from a manifest served
//! elsewhere (a studio's own mirror; the browser tests' tiny models).

use darkroom_pipeline::metadata::{read_parameters, GenerationParams};
use darkroom_weights::manifest::BUILTIN;
use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen_futures::JsFuture;

use crate::client::{Restart, WorkerClient};
use crate::components::briefs_panel::BriefsPanel;
use crate::components::capability_panel::CapabilityPanel;
use crate::components::gallery_panel::GalleryPanel;
use crate::components::generate_panel::GeneratePanel;
use crate::components::image_input::load_init_image;
use crate::components::model_manager::{refresh_stored, ModelManager};
use crate::components::prompts_panel::PromptsPanel;
use crate::generation;
use crate::probe::probe;
use crate::state::{AppState, ModelEntry, Tab};

/// Every value of a query parameter, in order (`?manifest=a&base=x&manifest=b&base=y`).
fn query_all(key: &str) -> Vec<String> {
    let search = web_sys::window().and_then(|w| w.location().search().ok()).unwrap_or_default();
    let Ok(params) = web_sys::UrlSearchParams::new_with_str(&search) else { return Vec::new() };
    params.get_all(key).iter().filter_map(|v| v.as_string()).collect()
}

/// Where the manifests the user confirmed (`?manifest=` and its base) are remembered.
const ADDED_MANIFESTS_KEY: &str = "darkroom-added-manifests";

fn confirmation_key(entry: &ModelEntry) -> String {
    format!("{}\n{}", entry.model_ref.manifest_file, entry.model_ref.base.as_deref().unwrap_or(""))
}

/// The confirmation keys remembered in `storage` (this page's, or Darkroom's own reached
/// through the Storage Access API).
fn confirmed_keys(storage: Option<web_sys::Storage>) -> Vec<String> {
    storage
        .and_then(|s| s.get_item(ADDED_MANIFESTS_KEY).ok().flatten())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn confirmed_manifests() -> Vec<String> {
    confirmed_keys(crate::state::local_storage())
}

/// Adds the models waiting for confirmation, and remembers them for later visits.
pub fn confirm_pending_models(state: AppState) {
    let pending = state.pending_models.get_untracked();
    let mut keys = confirmed_manifests();
    for entry in &pending {
        let key = confirmation_key(entry);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if let (Some(storage), Ok(text)) = (crate::state::local_storage(), serde_json::to_string(&keys)) {
        let _ = storage.set_item(ADDED_MANIFESTS_KEY, &text);
    }
    state.pending_models.set(Vec::new());
    // The address named these models to work with: the first that generates is chosen, as a
    // model listed first is at load.
    if let Some(first) = pending.iter().find(|m| m.generates()) {
        state.settings.apply_defaults(&first.manifest);
    }
    state.models.update(|models| {
        for (i, entry) in pending.into_iter().enumerate() {
            models.insert(i, entry);
        }
    });
    refresh_stored(state);
}

/// The (manifest URL, base) pairs stored under [`ADDED_MANIFESTS_KEY`].
fn confirmed_pairs(keys: &[String]) -> Vec<(String, Option<String>)> {
    keys.iter()
        .filter_map(|k| k.split_once('\n'))
        .map(|(url, base)| (url.to_string(), (!base.is_empty()).then(|| base.to_string())))
        .collect()
}

/// The models the user added from an address on an earlier visit (confirmed, remembered in
/// `storage`'s list), read again from their manifests; one that cannot be read now (offline,
/// gone) is left out. For the widget on Darkroom's own storage too (`storage_access`).
pub(crate) async fn remembered_models(storage: Option<web_sys::Storage>) -> Vec<ModelEntry> {
    let mut out = Vec::new();
    for (url, base) in confirmed_pairs(&confirmed_keys(storage)) {
        match crate::net::text(&url).await.and_then(|text| ModelEntry::parse(&text, &url, base)) {
            Ok(e) if !BUILTIN_IDS.with(|ids| ids.contains(&e.manifest.id)) => out.push(e),
            Ok(_) => {}
            Err(e) => web_sys::console::warn_1(&format!("the model list at {url}: {e}").into()),
        }
    }
    out
}

thread_local! {
    static BUILTIN_IDS: Vec<String> = BUILTIN
        .iter()
        .filter_map(|(file, text)| ModelEntry::parse(text, file, None).ok())
        .map(|e| e.manifest.id)
        .collect();
}

/// The built-in manifests, the models imported into this browser, those the user added from an
/// address before and those the address names (`?manifest=`, listed first): an address's model
/// never takes a built-in model's id, and in the app it is added only once the user confirms it
/// (remembered per manifest and base). The widget (`confirm` false) never takes a model from
/// its address — a host page writes that address — only those the user added on Darkroom's own
/// page; the developer build's widget does, for the tests of partitioned storage.
async fn load_models(state: AppState, confirm: bool) {
    let mut models: Vec<ModelEntry> = Vec::new();
    let builtin: Vec<ModelEntry> =
        BUILTIN.iter().filter_map(|(file, text)| ModelEntry::parse(text, file, None).ok()).collect();
    let confirmed = confirmed_manifests();
    let mut pending = Vec::new();
    let from_address = confirm || cfg!(feature = "dev-pages");
    let bases = query_all("base");
    let addressed: Vec<(String, Option<String>)> = if from_address {
        query_all("manifest").into_iter().enumerate().map(|(i, url)| (url, bases.get(i).cloned())).collect()
    } else {
        if !query_all("manifest").is_empty() {
            web_sys::console::warn_1(
                &"the widget ignores ?manifest=: it offers the built-in models and those added on Darkroom's own page"
                    .into(),
            );
        }
        Vec::new()
    };
    for (url, base) in addressed.iter().cloned() {
        match crate::net::text(&url).await.and_then(|text| ModelEntry::parse(&text, &url, base)) {
            Ok(e) if builtin.iter().any(|b| b.manifest.id == e.manifest.id) => state.error.set(Some(format!(
                "The model list at {url} names {:?}, the id of a built-in model; it was not added (a manifest may not replace another model).",
                e.manifest.id
            ))),
            Ok(e) if confirm && !confirmed.contains(&confirmation_key(&e)) => pending.push(e),
            Ok(e) => models.push(e),
            Err(e) => state.error.set(Some(format!("The model list at {url} could not be read: {e}"))),
        }
    }
    // Added on an earlier visit and not named by this address.
    for e in remembered_models(crate::state::local_storage()).await {
        let named = addressed.iter().any(|(url, _)| *url == e.model_ref.manifest_file);
        if !named && !models.iter().any(|m| m.manifest.id == e.manifest.id) {
            models.push(e);
        }
    }
    for (text, key) in crate::import::imported_manifests().await {
        if let Ok(e) = ModelEntry::parse(&text, &key, None) {
            if !builtin.iter().any(|b| b.manifest.id == e.manifest.id) {
                models.push(e);
            }
        }
    }
    models.extend(builtin);
    state.pending_models.set(pending);
    let first = models.iter().find(|m| m.generates()).map(|m| m.manifest.clone());
    // A model chosen meanwhile (the embedded widget's, once it reached Darkroom's own storage)
    // stays chosen.
    let chosen = state.settings.model.get_untracked();
    let keep = models.iter().any(|m| m.manifest.id == chosen);
    state.models.set(models);
    if let (Some(m), false) = (first, keep) {
        state.settings.apply_defaults(&m);
    }
    refresh_stored(state);
}

/// A dropped file: a PNG with generation parameters restores them; any other image becomes
/// the init image.
fn dropped(state: AppState, file: web_sys::File) {
    spawn_local(async move {
        let Ok(buffer) = JsFuture::from(file.array_buffer()).await else { return };
        let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
        let params = read_parameters(&bytes).ok().and_then(|t| GenerationParams::parse_infotext(&t).ok());
        match params {
            Some(p) => {
                state.settings.restore(&p, &state.models.get_untracked());
                state.tab.set(Tab::Generate);
            }
            None => {
                load_init_image(state, file.into());
                state.tab.set(Tab::Generate);
            }
        }
    });
}

fn keyboard(state: AppState) {
    let handle = window_event_listener(ev::keydown, move |e: web_sys::KeyboardEvent| {
        if e.key() == "Enter" && (e.ctrl_key() || e.meta_key()) && e.shift_key() {
            e.prevent_default();
            generation::enqueue(state);
        } else if e.key() == "Enter" && (e.ctrl_key() || e.meta_key()) {
            e.prevent_default();
            generation::start(state);
        } else if e.key() == "Escape" && state.run.get_untracked().is_some() {
            e.prevent_default();
            generation::cancel(state);
        }
    });
    std::mem::forget(handle);
    let over = window_event_listener(ev::dragover, |e: web_sys::DragEvent| e.prevent_default());
    std::mem::forget(over);
    let drop = window_event_listener(ev::drop, move |e: web_sys::DragEvent| {
        e.prevent_default();
        if let Some(file) = e.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) {
            dropped(state, file);
        }
    });
    std::mem::forget(drop);
}

/// The state both the app and the embedded widget run on: the worker, the models, the
/// keyboard shortcuts and dropped files.
/// `confirm`: the app, where models named by the address wait for the user's confirmation;
/// else the embedded widget, which takes none from its address (but in the developer build)
/// and keeps no image in a gallery.
pub(crate) fn app_state(confirm: bool) -> AppState {
    let state = AppState { in_widget: !confirm, ..AppState::new(WorkerClient::spawn()) };
    provide_context(state);
    follow_restarts(state);
    crate::components::model_manager::follow_stored_changes(state);
    #[cfg(feature = "dev-pages")]
    crash_hook(state);
    spawn_local(load_models(state, confirm));
    keyboard(state);
    state
}

/// `window.darkroomCrashWorker()` makes the worker panic, for the test of the recovery, and
/// `window.darkroomWorkerStats()` tells what the worker holds, for the soak test (developer
/// build only).
#[cfg(feature = "dev-pages")]
fn crash_hook(state: AppState) {
    use wasm_bindgen::prelude::*;
    let crash = Closure::<dyn Fn()>::new(move || {
        if let Some(worker) = state.worker.get_value() {
            worker.request(crate::protocol::ToWorker::Crash, Vec::new(), |_| {});
        }
    });
    let _ = js_sys::Reflect::set(&js_sys::global(), &"darkroomCrashWorker".into(), crash.as_ref());
    crash.forget();
    // `darkroomWorkerStats()`: a promise of the worker's `WorkerStats`, for the soak test.
    let stats = Closure::<dyn Fn() -> js_sys::Promise>::new(move || {
        js_sys::Promise::new(&mut |resolve, reject| {
            let Some(worker) = state.worker.get_value() else {
                let _ = reject.call1(&JsValue::NULL, &"no worker".into());
                return;
            };
            worker.request(crate::protocol::ToWorker::Stats, Vec::new(), move |message| {
                let outcome = match message.body {
                    crate::protocol::FromWorker::Stats(stats) => serde_json::to_string(&stats)
                        .ok()
                        .and_then(|json| js_sys::JSON::parse(&json).ok())
                        .map_or_else(
                            || reject.call1(&JsValue::NULL, &"unreadable".into()),
                            |v| resolve.call1(&JsValue::NULL, &v),
                        ),
                    other => reject.call1(&JsValue::NULL, &format!("{other:?}").into()),
                };
                let _ = outcome;
            });
        })
    });
    let _ = js_sys::Reflect::set(&js_sys::global(), &"darkroomWorkerStats".into(), stats.as_ref());
    stats.forget();
}

/// Says when the worker stopped and was started again (or given up on), and counts restarts.
pub(crate) fn follow_restarts(state: AppState) {
    let Some(worker) = state.worker.get_value() else { return };
    worker.on_restart(move |restart| match restart {
        Restart::Restarted(why) => {
            web_sys::console::warn_1(
                &format!("the generation worker stopped ({why}); a new one was started").into(),
            );
            state.worker_restarts.update(|n| *n += 1);
        }
        Restart::GaveUp(why) => state
            .worker_error
            .set(Some(format!("Darkroom's generation worker keeps stopping ({why}): reload the page."))),
    });
}

#[component]
pub fn App() -> impl IntoView {
    let state = app_state(true);
    crate::components::queue_panel::watch(state);
    // A new worker carries on with the queue stored by the old one.
    Effect::new(move |previous: Option<u32>| {
        let restarts = state.worker_restarts.get();
        if previous.is_some_and(|p| p != restarts) {
            crate::components::queue_panel::watch(state);
        }
        restarts
    });
    let (probe_result, set_probe_result) = signal(None);
    spawn_local(async move {
        let result = probe().await;
        if result.is_err() {
            // Nothing can run: the GPU tab says why and what to do.
            state.tab.set(Tab::Gpu);
        }
        set_probe_result.set(Some(result));
    });
    let tab_button = move |tab: Tab, label: &'static str, id: &'static str| {
        view! {
            <button role="tab" id=id aria-selected=move || (state.tab.get() == tab).to_string()
                class:active=move || state.tab.get() == tab on:click=move |_| state.tab.set(tab)>{label}</button>
        }
    };
    let gpu_note = move || match probe_result.get() {
        Some(Err(_)) => Some("no WebGPU here"),
        Some(Ok(r)) if r.is_software() => Some("software GPU: very slow"),
        _ => None,
    };
    view! {
        <header class="top">
            <h1>"Darkroom"</h1>
            <p class="tagline">"Stable Diffusion on your own GPU. Nothing you type or generate leaves this device."</p>
            <nav class="tabs" role="tablist">
                {tab_button(Tab::Generate, "Generate", "tab-generate")}
                {tab_button(Tab::Models, "Models", "tab-models")}
                {tab_button(Tab::Gallery, "Gallery", "tab-gallery")}
                {tab_button(Tab::Briefs, "Briefs", "tab-briefs")}
                {tab_button(Tab::Prompts, "Prompts", "tab-prompts")}
                {tab_button(Tab::Gpu, "Your GPU", "tab-gpu")}
                {move || gpu_note().map(|n| view! { <span class="gpu-note warn">{n}</span> })}
            </nav>
        </header>
        <main class="app">
            {move || state.worker_error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            {move || {
                let pending = state.pending_models.get();
                (!pending.is_empty()).then(|| view! {
                    <div class="confirm-models" id="manifest-confirm" role="dialog" aria-label="Add models from this address">
                        <p>"This address adds models that are not in Darkroom's list:"</p>
                        <ul>{pending.into_iter().map(|e| view! {
                            <li>
                                <strong>{e.manifest.name.clone()}</strong>" ("{e.manifest.id.clone()}") — described at "
                                <code>{e.model_ref.manifest_file.clone()}</code>", files from "
                                <code>{e.model_ref.base.clone().unwrap_or_else(|| e.manifest.cdn_base())}</code>
                            </li>
                        }).collect_view()}</ul>
                        <p class="small muted">"Nothing is downloaded until you press Download in Models. Add them only if you trust where they come from."</p>
                        <div class="actions">
                            <button type="button" class="primary add" on:click=move |_| confirm_pending_models(state)>"Add"</button>
                            <button type="button" class="ignore" on:click=move |_| state.pending_models.set(Vec::new())>"Ignore"</button>
                        </div>
                    </div>
                })
            }}
            {move || state.upscale_status.get().map(|text| view! {
                <p class="toast small" id="upscale-status" role="status">
                    {text}" "
                    <button type="button" class="link" on:click=move |_| state.upscale_status.set(None)>"Dismiss"</button>
                </p>
            })}
            <div class:hidden=move || state.tab.get() != Tab::Generate><GeneratePanel /></div>
            <div class:hidden=move || state.tab.get() != Tab::Models><ModelManager /></div>
            <div class:hidden=move || state.tab.get() != Tab::Gallery><GalleryPanel /></div>
            <div class:hidden=move || state.tab.get() != Tab::Briefs><BriefsPanel /></div>
            <div class:hidden=move || state.tab.get() != Tab::Prompts><PromptsPanel /></div>
            <div class:hidden=move || state.tab.get() != Tab::Gpu><CapabilityPanel probe=probe_result.into() /></div>
        </main>
    }
}

/// Registers the service worker that keeps the app shell for offline use.
pub fn register_service_worker() {
    let Some(window) = web_sys::window() else { return };
    let _ = window.navigator().service_worker().register("./sw.js");
}
