//! The embedded widget's route to Darkroom's own storage. Browsers keep an iframe's storage apart
//! per embedding site, so models downloaded on Darkroom's page are not visible to the widget on
//! a design tool's page. Where the browser offers the Storage Access API with unpartitioned
//! storage (`document.requestStorageAccess({indexedDB, SharedWorker})`), the widget asks for it
//! (by itself when the browser already allows it, else on the user's click) and then works on
//! Darkroom's own copy: the page's stores open through the handle's `indexedDB`, and the
//! generation worker is restarted as a shared worker through the handle, so its downloads,
//! loads and caches use the same storage. Where the browser says no, the widget says that this
//! site needs its own download, with its size.

use js_sys::{Function, Object, Promise, Reflect};
use leptos::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::client::WorkerClient;
use crate::components::model_manager::refresh_stored;
use crate::state::AppState;

/// Where the widget's models live.
#[derive(Debug, Clone, PartialEq)]
pub enum FirstParty {
    /// Not known yet (the widget is checking).
    Checking,
    /// The browser has no Storage Access API with unpartitioned storage (or this is no iframe):
    /// the widget's own partition it is.
    Unsupported,
    /// The browser may grant it on a click: the widget offers the button.
    Offer,
    Asking,
    /// Darkroom's own storage is in use.
    Using,
    /// The browser refused, with its words.
    Refused(String),
}

fn document() -> Option<web_sys::Document> {
    web_sys::window()?.document()
}

fn in_frame() -> bool {
    let Some(window) = web_sys::window() else { return false };
    match window.parent() {
        Ok(Some(parent)) => !js_sys::Object::is(&parent, &window),
        _ => false,
    }
}

fn method(target: &JsValue, name: &str) -> Option<Function> {
    Reflect::get(target, &name.into()).ok()?.dyn_into().ok()
}

fn error_text(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).unwrap_or_else(|| format!("{e:?}"))
}

async fn call_promise(target: &JsValue, name: &str, arg: Option<&JsValue>) -> Result<JsValue, String> {
    let f = method(target, name).ok_or_else(|| format!("this browser has no {name}"))?;
    let result = match arg {
        Some(a) => f.call1(target, a),
        None => f.call0(target),
    }
    .map_err(|e| error_text(&e))?;
    JsFuture::from(Promise::resolve(&result)).await.map_err(|e| error_text(&e))
}

/// Whether the browser already lets this frame have storage access without asking: the
/// permission was granted before, or it allows third-party storage outright.
async fn already_allowed(doc: &JsValue) -> bool {
    let granted = async {
        let permissions = Reflect::get(&web_sys::window()?.navigator(), &"permissions".into()).ok()?;
        let query = Object::new();
        let _ = Reflect::set(&query, &"name".into(), &"storage-access".into());
        let status = call_promise(&permissions, "query", Some(&query)).await.ok()?;
        Some(Reflect::get(&status, &"state".into()).ok()?.as_string()? == "granted")
    }
    .await
    .unwrap_or(false);
    granted
        || call_promise(doc, "hasStorageAccess", None).await.ok().and_then(|v| v.as_bool()).unwrap_or(false)
}

/// Asks for the handle and switches the page's stores and the worker to it.
async fn request(state: AppState) -> Result<(), String> {
    let doc: JsValue = document().ok_or("no document")?.into();
    let types = Object::new();
    let _ = Reflect::set(&types, &"indexedDB".into(), &true.into());
    let _ = Reflect::set(&types, &"SharedWorker".into(), &true.into());
    let _ = Reflect::set(&types, &"localStorage".into(), &true.into());
    let handle = call_promise(&doc, "requestStorageAccess", Some(&types)).await?;
    let factory: web_sys::IdbFactory = Reflect::get(&handle, &"indexedDB".into())
        .map_err(|e| error_text(&e))?
        .dyn_into()
        .map_err(|_| "the browser gave no IndexedDB with the storage access".to_string())?;
    let client = WorkerClient::spawn_shared(&handle)?;
    darkroom_weights::browser::use_factory(factory);
    if let Some(old) = state.worker.get_value() {
        old.stop();
    }
    state.worker.set_value(Some(client));
    state.worker_error.set(None);
    crate::app::follow_restarts(state);
    // Checkpoints imported on Darkroom's page are models of that storage too, and so are the
    // models the user added there from an address.
    let imported = crate::import::imported_manifests()
        .await
        .into_iter()
        .filter_map(|(text, key)| crate::state::ModelEntry::parse(&text, &key, None).ok());
    let own_storage = Reflect::get(&handle, &"localStorage".into()).ok().and_then(|s| s.dyn_into().ok());
    let remembered = crate::app::remembered_models(own_storage).await;
    for entry in imported.chain(remembered) {
        if state.model(&entry.manifest.id).is_none() {
            state.models.update(|list| list.push(entry));
        }
    }
    refresh_stored(state);
    Ok(())
}

/// At start: uses Darkroom's own storage when the browser allows it without asking, else says
/// whether the widget can offer to ask.
pub async fn check(state: AppState, first_party: RwSignal<FirstParty>) {
    let supported = in_frame() && document().is_some_and(|d| method(&d, "requestStorageAccess").is_some());
    if !supported {
        first_party.set(FirstParty::Unsupported);
        return;
    }
    let doc: JsValue = document().map(Into::into).unwrap_or(JsValue::NULL);
    if already_allowed(&doc).await && request(state).await.is_ok() {
        first_party.set(FirstParty::Using);
        return;
    }
    first_party.set(FirstParty::Offer);
}

/// The user asked to use Darkroom's own storage (a click: the gesture the browser wants).
pub fn ask(state: AppState, first_party: RwSignal<FirstParty>) {
    first_party.set(FirstParty::Asking);
    leptos::task::spawn_local(async move {
        first_party.set(match request(state).await {
            Ok(()) => FirstParty::Using,
            Err(e) => FirstParty::Refused(e),
        });
    });
}
