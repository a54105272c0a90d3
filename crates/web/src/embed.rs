//! The embedded widget (`?embed=1`, mounted by www/embed.js in a host page's iframe): a compact
//! generator that answers the host page's requests over a versioned postMessage protocol, only
//! for the page that embeds it and only after the user allowed that site. The host receives
//! nothing but the images the user inserts.
//!
//! Host → widget: `{darkroom: 1, type: "hello"}`, `{darkroom: 1, type: "generate", id, params}`,
//! `{darkroom: 1, type: "cancel"}`. Widget → host: `{darkroom: 1, type: "ready"}`,
//! `{type: "progress", id, stage, fraction}`, `{type: "result", id, png, parameters}` (also
//! without an id when the user inserts an image they made themselves), `{type: "error", id,
//! code, message}`.

use js_sys::{Array, Object, Reflect, Uint8Array};
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::MessageEvent;

use crate::components::model_manager::start_download;
use crate::embed_request::{self, missing};
use crate::generation;
use crate::state::{human_bytes, AppState};
use crate::storage_access::{self, FirstParty};
use darkroom_pipeline::host::{self, Message, Refusal, Value};

use darkroom_pipeline::host::VERSION;
const ALLOWED: &str = "darkroom.embed.allowed";
const DENIED: &str = "darkroom.embed.denied";

/// A host request being served.
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    id: u32,
    /// Whether the run for it has started (consent given, generation sent to the worker).
    started: bool,
}

#[derive(Clone, Copy)]
struct Embed {
    /// The embedding page's origin, as the browser reports it.
    host: RwSignal<Option<String>>,
    asking: RwSignal<bool>,
    pending: RwSignal<Option<Pending>>,
    /// Params waiting for consent.
    waiting: StoredValue<Option<(u32, Value)>, LocalStorage>,
    /// The pending request waits for the user to download what it needs (`missing`): the host
    /// is not told what this browser lacks.
    held: RwSignal<bool>,
    allowed: RwSignal<Vec<String>>,
    denied: RwSignal<Vec<String>>,
    /// Whether the models are Darkroom's own copy (Storage Access API) or this site's.
    first_party: RwSignal<FirstParty>,
    /// The embedding page has an opaque origin (a sandboxed page): nobody to ask consent for,
    /// nowhere safe to send images; the widget refuses to work for it.
    opaque: RwSignal<bool>,
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

fn load_list(key: &str) -> Vec<String> {
    storage()
        .and_then(|s| s.get_item(key).ok().flatten())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn save_list(key: &str, list: &[String]) {
    if let Some(s) = storage() {
        let _ = s.set_item(key, &serde_json::to_string(list).unwrap_or_default());
    }
}

/// Messages ignored, with why: what a debugging host developer (or a test) can read as
/// `window.__darkroomEmbedLog` inside the widget.
fn log_ignored(why: &str) {
    let global = js_sys::global();
    let log = Reflect::get(&global, &"__darkroomEmbedLog".into())
        .ok()
        .and_then(|v| v.dyn_into::<Array>().ok())
        .unwrap_or_else(|| {
            let a = Array::new();
            let _ = Reflect::set(&global, &"__darkroomEmbedLog".into(), &a);
            a
        });
    log.push(&why.into());
    web_sys::console::debug_1(&format!("darkroom embed: ignored a message ({why})").into());
}

/// The embedding page's origin: `location.ancestorOrigins` where the browser has it.
/// The embedding page's origin from `location.ancestorOrigins`; `None` where the browser has no
/// such list or says "null" (an opaque origin, or one the browser hides): the origin of the
/// parent's first message decides then.
fn parent_origin() -> Option<String> {
    let location = web_sys::window()?.location();
    let ancestors = Reflect::get(&location, &"ancestorOrigins".into()).ok()?;
    let first = Reflect::get(&ancestors, &0.into()).ok()?;
    first.as_string().filter(|o| o != "null")
}

fn parent() -> Option<web_sys::Window> {
    web_sys::window()?.parent().ok().flatten()
}

fn post(host: &str, message: &Object, transfer: Option<&Array>) {
    let _ = Reflect::set(message, &"darkroom".into(), &VERSION.into());
    if let Some(p) = parent() {
        let _ = match transfer {
            Some(t) => p.post_message_with_transfer(message, host, t),
            None => p.post_message(message, host),
        };
    }
}

fn object(pairs: &[(&str, JsValue)]) -> Object {
    let o = Object::new();
    for (k, v) in pairs {
        let _ = Reflect::set(&o, &(*k).into(), v);
    }
    o
}

fn send_error(host: &str, id: Option<u32>, code: &str, message: &str) {
    let id = id.map_or(JsValue::NULL, JsValue::from);
    post(
        host,
        &object(&[("type", "error".into()), ("id", id), ("code", code.into()), ("message", message.into())]),
        None,
    );
}

fn run_request(state: AppState, embed: Embed, id: u32, params: Value) {
    let host = embed.host.get_untracked().unwrap_or_default();
    if state.run.get_untracked().is_some() {
        // The user's own run in the widget.
        embed.pending.set(None);
        send_error(&host, Some(id), "busy", "Darkroom is still working on the previous image");
        return;
    }
    if let Err(e) = embed_request::apply(state, &params) {
        send_error(&host, Some(id), "invalid", &e);
        return;
    }
    embed.pending.set(Some(Pending { id, started: false }));
    if untrack(|| missing(state)).is_empty() {
        start_request(state, embed);
    } else {
        embed.held.set(true);
    }
}

/// The pending request's run, its form applied and everything it needs here.
fn start_request(state: AppState, embed: Embed) {
    let host = embed.host.get_untracked().unwrap_or_default();
    let Some(Pending { id, .. }) = embed.pending.get_untracked() else { return };
    embed.held.set(false);
    embed.pending.set(Some(Pending { id, started: true }));
    state.clear_results();
    generation::start(state);
    if state.run.get_untracked().is_none() {
        // Refused before it started: the form says why.
        embed.pending.set(None);
        let code = state.error_code.get_untracked().unwrap_or("invalid");
        send_error(&host, Some(id), code, &state.error.get_untracked().unwrap_or_default());
    }
}

/// Ends the pending request before its run started (the user refused what it needs, or the
/// host cancelled it), answering the host with `code`.
fn drop_request(embed: Embed, code: &str, message: &str) {
    if let (Some(host), Some(p)) = (embed.host.get_untracked(), embed.pending.get_untracked()) {
        send_error(&host, Some(p.id), code, message);
    }
    embed.waiting.set_value(None);
    embed.asking.set(false);
    embed.held.set(false);
    embed.pending.set(None);
}

fn on_message(state: AppState, embed: Embed, event: MessageEvent) {
    let from_parent = match (event.source(), parent()) {
        (Some(source), Some(p)) => Object::is(&source, &p),
        _ => false,
    };
    if from_parent && embed.host.get_untracked().is_none() {
        // Browsers without location.ancestorOrigins (or where it says "null"): the embedding
        // window's first message tells — unless its origin is opaque too.
        if event.origin() == "null" {
            embed.opaque.set(true);
            log_ignored("from an opaque origin (a sandboxed page): the widget does not work for one");
            return;
        }
        embed.host.set(Some(event.origin()));
    }
    let Some(host) = embed.host.get_untracked() else {
        log_ignored("the embedding page's origin is unknown");
        return;
    };
    if !from_parent || event.origin() != host {
        log_ignored(&format!("from {} which is not the embedding page", event.origin()));
        return;
    }
    let message = match host::read_message(&embed_request::read_value(&event.data())) {
        Ok(m) => m,
        Err(Refusal::Ignore(why)) => {
            log_ignored(why);
            return;
        }
        Err(Refusal::Answer { id, message }) => {
            log_ignored(&message);
            send_error(&host, id, "invalid", &message);
            return;
        }
    };
    match message {
        Message::Hello => {
            post(&host, &object(&[("type", "ready".into()), ("version", VERSION.into())]), None)
        }
        Message::Cancel => match embed.pending.get_untracked() {
            Some(Pending { started: false, .. }) => {
                drop_request(embed, "cancelled", "the generation was cancelled")
            }
            _ => generation::cancel(state),
        },
        Message::Generate { id, params } => {
            // Consent first: a site the user has not allowed learns nothing, not even whether
            // Darkroom is busy.
            if embed.denied.get_untracked().contains(&host) {
                send_error(&host, Some(id), "denied", "the user does not allow this site to use Darkroom");
            } else if embed.pending.get_untracked().is_some() {
                send_error(&host, Some(id), "busy", "Darkroom is still working on the previous image");
            } else if !embed.allowed.get_untracked().contains(&host) {
                embed.waiting.set_value(Some((id, params)));
                embed.pending.set(Some(Pending { id, started: false }));
                embed.asking.set(true);
            } else {
                run_request(state, embed, id, params);
            }
        }
    }
}

/// Sends the finished image to the host: the answer to its request, or an insert of its own.
fn insert(state: AppState, embed: Embed) {
    let (Some(host), Some(image)) =
        (embed.host.get_untracked(), state.results.get_untracked().into_iter().last())
    else {
        return;
    };
    let id = embed.pending.get_untracked().map_or(JsValue::NULL, |p| JsValue::from(p.id));
    let bytes = Uint8Array::from(image.png.as_slice());
    let buffer = bytes.buffer();
    let message = object(&[
        ("type", "result".into()),
        ("id", id),
        ("png", buffer.clone().into()),
        ("parameters", image.infotext.as_str().into()),
    ]);
    post(&host, &message, Some(&Array::of1(&buffer)));
    embed.pending.set(None);
    embed.held.set(false);
    state.clear_results();
}

fn dismiss(state: AppState, embed: Embed) {
    if let (Some(host), Some(p)) = (embed.host.get_untracked(), embed.pending.get_untracked()) {
        send_error(&host, Some(p.id), "dismissed", "the user discarded the image");
    }
    embed.pending.set(None);
    embed.held.set(false);
    state.clear_results();
}

/// Darkroom's own page, beside the widget's (for what the widget cannot do where it is).
fn app_address() -> String {
    web_sys::window()
        .and_then(|w| w.location().href().ok())
        .and_then(|href| web_sys::Url::new_with_base("./", &href).ok())
        .map(|u| u.href())
        .unwrap_or_else(|| "./".into())
}

/// The widget. Reuses the app's state, worker and generation; shows only what fits 360 px.
#[component]
pub fn EmbedApp() -> impl IntoView {
    let state = crate::app::app_state(false);
    let s = state.settings;
    let host = parent_origin();
    let embed = Embed {
        host: RwSignal::new(host.clone()),
        asking: RwSignal::new(false),
        pending: RwSignal::new(None),
        waiting: StoredValue::new_local(None),
        held: RwSignal::new(false),
        allowed: RwSignal::new(load_list(ALLOWED)),
        denied: RwSignal::new(load_list(DENIED)),
        first_party: RwSignal::new(FirstParty::Checking),
        opaque: RwSignal::new(false),
    };
    leptos::task::spawn_local(storage_access::check(state, embed.first_party));
    if let Some(model) = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .and_then(|q| web_sys::UrlSearchParams::new_with_str(&q).ok())
        .and_then(|p| p.get("model"))
    {
        // Applied once the models are listed (app_state loads them).
        Effect::new(move |done: Option<bool>| {
            if done == Some(true) {
                return true;
            }
            match state.model(&model) {
                Some(m) => {
                    s.apply_defaults(&m.manifest);
                    true
                }
                None => false,
            }
        });
    }
    let handler =
        Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| on_message(state, embed, event));
    if let Some(w) = web_sys::window() {
        let _ = w.add_event_listener_with_callback("message", handler.as_ref().unchecked_ref());
    }
    handler.forget();
    // Announce ourselves: the host's hello may have come before this listener existed. Only
    // "ready" goes out before the embedding origin is known.
    let ready = object(&[("type", "ready".into()), ("version", VERSION.into())]);
    post(host.as_deref().unwrap_or("*"), &ready, None);

    // Progress to the host, and the end of a run: an error or a cancel answers the request;
    // an image waits for the user's Insert.
    Effect::new(move |was_running: Option<bool>| {
        let run = state.run.get();
        let (Some(host), Some(p)) = (embed.host.get_untracked(), embed.pending.get_untracked()) else {
            return run.is_some();
        };
        if let (Some(r), true) = (&run, p.started) {
            let message = object(&[
                ("type", "progress".into()),
                ("id", p.id.into()),
                ("stage", r.label.as_str().into()),
                ("fraction", r.fraction.into()),
            ]);
            post(&host, &message, None);
        } else if was_running == Some(true) && p.started && state.results.get_untracked().is_empty() {
            embed.pending.set(None);
            match (state.error.get_untracked(), state.error_code.get_untracked()) {
                (Some(e), code) => send_error(&host, Some(p.id), code.unwrap_or("gpu"), &e),
                (None, _) => send_error(&host, Some(p.id), "cancelled", "the generation was cancelled"),
            }
        }
        run.is_some()
    });

    // A request held for a download starts once everything it needs is here.
    Effect::new(move |_| {
        if embed.held.get() && missing(state).is_empty() {
            start_request(state, embed);
        }
    });

    // Consent, downloads and Darkroom's storage act only when the widget is visibly on screen.
    let guard = crate::visibility::Guard::new();
    let root = NodeRef::<leptos::html::Div>::new();
    Effect::new(move |_| {
        if let Some(element) = root.get() {
            guard.observe(&element);
        }
    });
    let decide = move |allow: bool| {
        if allow && !guard.allows() {
            return;
        }
        let Some(host) = embed.host.get_untracked() else { return };
        embed.asking.set(false);
        let (list, key) = if allow { (embed.allowed, ALLOWED) } else { (embed.denied, DENIED) };
        list.update(|l| {
            if !l.contains(&host) {
                l.push(host.clone());
            }
        });
        save_list(key, &list.get_untracked());
        if let Some((id, params)) = embed.waiting.get_value() {
            embed.waiting.set_value(None);
            if allow {
                run_request(state, embed, id, params);
            } else {
                embed.pending.set(None);
                send_error(&host, Some(id), "denied", "the user does not allow this site to use Darkroom");
            }
        }
    };
    let revoke = move |origin: String| {
        for (list, key) in [(embed.allowed, ALLOWED), (embed.denied, DENIED)] {
            list.update(|l| l.retain(|o| o != &origin));
            save_list(key, &list.get_untracked());
        }
    };
    let model_line = move || {
        let entry = state.selected_model()?;
        let stored = entry.stored.get();
        if stored.complete {
            return None;
        }
        let (size, exact) = entry.manifest.download_size();
        let size = if exact {
            human_bytes(size)
        } else {
            entry.manifest.approx_size.map(human_bytes).unwrap_or_default()
        };
        let downloading = entry.download.get().is_some_and(|d| d.id.is_some());
        let progress =
            entry.download.get().map(|d| format!("{} of {}", human_bytes(d.bytes), human_bytes(d.total)));
        let license = entry.manifest.license.clone();
        let name = entry.manifest.name.clone();
        let e = entry.clone();
        let first_party = embed.first_party.get();
        let where_text = match &first_party {
            FirstParty::Using => format!("{name} ({size}) is not downloaded in Darkroom's storage yet: it downloads once, for Darkroom's own page and every site that embeds it."),
            _ => format!("{name} ({size}) is not in this site's storage yet: browsers keep each site's storage apart, so Darkroom inside this page needs its own copy, downloaded once."),
        };
        Some(view! {
            <div class="embed-model" id="embed-model">
                <p>{where_text}</p>
                <p class="muted small">"License: " <a href=license.url target="_blank" rel="noopener noreferrer">{license.name}</a></p>
                {if downloading {
                    view! { <p class="muted small">{progress}</p> }.into_any()
                } else {
                    view! { <button class="primary" id="embed-download" on:click=move |_| if guard.allows() { start_download(state, &e) }>"Accept the license and download"</button> }.into_any()
                }}
            </div>
        })
    };
    // Offered while the model the host wants is not here (or not known here: it may be one
    // imported on Darkroom's own page).
    let storage_line = move || {
        let entry = state.selected_model();
        if entry.as_ref().is_some_and(|e| e.stored.get().complete) {
            return None;
        }
        let size = entry.map(|e| match e.manifest.download_size() {
            (size, true) => human_bytes(size),
            (size, false) => e.manifest.approx_size.map(human_bytes).unwrap_or_else(|| human_bytes(size)),
        });
        match embed.first_party.get() {
            FirstParty::Offer => Some(view! {
                <div class="embed-model">
                    <p class="small">"Downloaded models on Darkroom's own site already? Your browser can let this page use them."</p>
                    <button id="embed-storage-access" disabled=move || state.run.get().is_some()
                        on:click=move |_| if guard.allows() { storage_access::ask(state, embed.first_party) }>"Use Darkroom's saved models"</button>
                </div>
            }.into_any()),
            FirstParty::Asking => Some(view! { <p class="muted small">"Asking the browser…"</p> }.into_any()),
            FirstParty::Refused(why) => {
                let what = size.map(|s| format!("its own download of {s}")).unwrap_or_else(|| "its own downloads".into());
                Some(view! {
                    <p class="small" id="embed-storage-refused">{format!("The browser did not let this page use Darkroom's own storage ({why}), so this site needs {what}.")}</p>
                }.into_any())
            }
            _ => None,
        }
    };
    // A held request: what it needs besides the selected model (whose line is above), and the
    // user's way to say no. The host hears of it only as the user's refusal.
    let needs_line = move || {
        if !embed.held.get() {
            return None;
        }
        let host = embed.host.get().unwrap_or_default();
        let controls = missing(state).into_iter().filter(|n| n.control).map(|n| {
            let line = match &n.entry {
                Some(e) if e.manifest.family == darkroom_weights::ModelKind::Depth => format!("The depth preprocessor's {} ({}), not downloaded yet.", e.manifest.name, human_bytes(e.manifest.approx_size.unwrap_or(e.manifest.download_size().0))),
                Some(e) => format!("ControlNet {} ({}), not downloaded yet.", e.manifest.name, human_bytes(e.manifest.download_size().0)),
                None => format!("ControlNet “{}”, which Darkroom does not know here.", n.id),
            };
            let e = n.entry.clone();
            let downloading = e.as_ref().is_some_and(|e| e.download.get().is_some_and(|d| d.id.is_some()));
            view! {
                <p class="small">{line}" "
                    {e.filter(|_| !downloading).map(|e| view! { <button id=format!("embed-download-{}", e.manifest.id) on:click=move |_| if guard.allows() { start_download(state, &e) }>"Download"</button> })}
                </p>
            }
        }).collect_view();
        Some(view! {
            <div class="embed-model" id="embed-needs">
                <p>{format!("{host} asked for an image that needs models not downloaded here yet: it waits until you download them, or refuse it.")}</p>
                {controls}
                <button id="embed-refuse" on:click=move |_| drop_request(embed, "model", "the user did not download what the request needs")>"Refuse"</button>
            </div>
        })
    };
    let result = move || state.results.get().into_iter().last();
    view! {
        <div class="embed" node_ref=root>
            <header class="embed-top">
                <strong>"Darkroom"</strong>
                <span class="muted small">{move || embed.host.get().map(|h| format!("in {h} · runs on your GPU, nothing leaves it")).unwrap_or_default()}</span>
            </header>
            <Show when=move || embed.asking.get()>
                <div class="consent" role="dialog" id="embed-consent">
                    <p><strong>{move || embed.host.get().unwrap_or_default()}</strong>" wants to make images with Darkroom on your GPU. It will receive only the images you insert."</p>
                    <div class="row"><button class="primary" id="embed-allow" on:click=move |_| decide(true)>"Allow"</button>
                    <button id="embed-deny" on:click=move |_| decide(false)>"Deny"</button></div>
                </div>
            </Show>
            <Show when=move || embed.opaque.get()>
                <p class="error small" role="alert" id="embed-opaque">"The page around this widget has no origin of its own (a sandboxed or data: page), so Darkroom cannot tell who would receive the images: it does not work here. "
                    <a href=app_address() target="_blank" rel="noopener">"Open Darkroom in its own window"</a></p>
            </Show>
            {move || guard.refused.get().map(|why| view! {
                <p class="error small" role="alert" id="embed-covered">{why}" "
                    <a href=app_address() target="_blank" rel="noopener">"Open Darkroom in its own window"</a></p>
            })}
            <Show when=move || embed.first_party.get() == FirstParty::Using>
                <p class="muted small" id="embed-first-party">"Using the models saved on Darkroom's own site."</p>
            </Show>
            {storage_line}
            {model_line}
            {needs_line}
            {move || state.error.get().map(|e| view! { <p class="error" role="alert" id="embed-error">{e}</p> })}
            <textarea id="embed-prompt" rows="3" placeholder="Describe the image"
                prop:value=move || s.prompt.get() on:input=move |ev| s.prompt.set(event_target_value(&ev))></textarea>
            <div class="row">
                <button class="primary" id="embed-generate" disabled=move || state.run.get().is_some()
                    on:click=move |_| { state.clear_results(); generation::start(state); }>"Generate"</button>
                <button id="embed-cancel" disabled=move || state.run.get().is_none() on:click=move |_| generation::cancel(state)>"Cancel"</button>
            </div>
            {move || state.run.get().map(|r| view! {
                <progress max="1" value=r.fraction></progress>
                <p class="muted small">{r.label}</p>
            })}
            {move || result().map(|r| view! {
                <figure class="embed-result">
                    <img src=r.url alt=r.infotext.clone() />
                    <div class="row">
                        <button class="primary" id="embed-insert" on:click=move |_| insert(state, embed)>"Insert"</button>
                        <button id="embed-discard" on:click=move |_| dismiss(state, embed)>"Discard"</button>
                    </div>
                </figure>
            })}
            <details class="embed-sites">
                <summary class="muted small">"Sites"</summary>
                {move || {
                    let rows: Vec<(String, &'static str)> = embed.allowed.get().into_iter().map(|o| (o, "allowed"))
                        .chain(embed.denied.get().into_iter().map(|o| (o, "denied"))).collect();
                    rows.into_iter().map(|(origin, what)| {
                        let o = origin.clone();
                        view! { <p class="small">{format!("{origin}: {what} ")}<button on:click=move |_| revoke(o.clone())>"Forget"</button></p> }
                    }).collect_view()
                }}
            </details>
        </div>
    }
}
