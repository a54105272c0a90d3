//! The app a user meets: generate, models, gallery, briefs, GPU — one tab each — over the generation
//! worker. `?manifest=<url>[&base=<url>]` (repeatable) adds a model from a manifest served
//! elsewhere (a studio's own mirror; the browser tests' tiny models).

use darkroom_pipeline::metadata::{read_parameters, GenerationParams};
use darkroom_weights::manifest::BUILTIN;
use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen_futures::JsFuture;

use crate::client::WorkerClient;
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

/// The built-in manifests, the models imported into this browser and, if the address names one,
/// an extra manifest (listed first).
async fn load_models(state: AppState) {
    let mut models: Vec<ModelEntry> = Vec::new();
    let bases = query_all("base");
    for (i, url) in query_all("manifest").into_iter().enumerate() {
        match crate::net::text(&url)
            .await
            .and_then(|text| ModelEntry::parse(&text, &url, bases.get(i).cloned()))
        {
            Ok(e) => models.push(e),
            Err(e) => state.error.set(Some(format!("The model list at {url} could not be read: {e}"))),
        }
    }
    for (text, key) in crate::import::imported_manifests().await {
        if let Ok(e) = ModelEntry::parse(&text, &key, None) {
            models.push(e);
        }
    }
    for (file, text) in BUILTIN {
        if let Ok(e) = ModelEntry::parse(text, file, None) {
            // A manifest given in the address (a mirror) stands in for the built-in one.
            if !models.iter().any(|m| m.manifest.id == e.manifest.id) {
                models.push(e);
            }
        }
    }
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
pub(crate) fn app_state() -> AppState {
    let state = AppState::new(WorkerClient::spawn());
    provide_context(state);
    spawn_local(load_models(state));
    keyboard(state);
    state
}

#[component]
pub fn App() -> impl IntoView {
    let state = app_state();
    crate::components::queue_panel::watch(state);
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
