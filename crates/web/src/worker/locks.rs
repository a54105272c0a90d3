//! Web Locks (`navigator.locks`) per model, shared by every tab, the widget and their workers
//! of one origin: a download or a deletion holds its model's lock exclusively, a load holds it
//! shared, so no tab deletes files another is writing or reading, and two tabs never write one
//! file. A deletion also tells the other workers (a BroadcastChannel) to cancel their download
//! of that model, so it does not wait for a download that would only be deleted.

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// A lock held until dropped.
pub(super) struct Held {
    release: Function,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.release.call0(&JsValue::NULL);
    }
}

fn lock_name(model: &str) -> String {
    format!("darkroom-model:{model}")
}

/// Waits for model `id`'s lock, `exclusive` or shared. `None` where the browser has no Web
/// Locks (the work then goes on unguarded, as it did before them).
pub(super) async fn model_lock(id: &str, exclusive: bool) -> Option<Held> {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    let locks = Reflect::get(&navigator, &"locks".into()).ok().filter(|l| l.is_object())?;
    let request: Function = Reflect::get(&locks, &"request".into()).ok()?.dyn_into().ok()?;
    let mut release = None;
    let held = Promise::new(&mut |resolve, _| release = Some(resolve));
    let mut granted_resolve = None;
    let granted = Promise::new(&mut |resolve, _| granted_resolve = Some(resolve));
    let (release, granted_resolve) = (release?, granted_resolve?);
    // The lock is held until the promise the callback returns settles: until `Held` is dropped.
    let callback = Closure::once_into_js(move |_lock: JsValue| -> JsValue {
        let _ = granted_resolve.call0(&JsValue::NULL);
        held.into()
    });
    let options = Object::new();
    let mode = if exclusive { "exclusive" } else { "shared" };
    let _ = Reflect::set(&options, &"mode".into(), &mode.into());
    let requested = request.call3(&locks, &lock_name(id).into(), &options, &callback).ok()?;
    // A refused request (an aborted lock) must not surface as an unhandled rejection.
    if let Ok(requested) = requested.dyn_into::<Promise>() {
        let ignore = Closure::<dyn FnMut(JsValue)>::new(|_| {});
        let _ = requested.catch(&ignore);
        ignore.forget();
    }
    JsFuture::from(granted).await.ok()?;
    Some(Held { release })
}

const CHANNEL: &str = "darkroom-models";

/// Asks every other worker of this origin to cancel its download of model `id`.
pub(super) fn cancel_elsewhere(id: &str) {
    crate::broadcast::post(CHANNEL, &JsValue::from_str(id));
}

/// Calls `on_cancel` with each model id another worker asked to cancel downloads of.
pub(super) fn listen(on_cancel: impl Fn(String) + 'static) {
    crate::broadcast::listen(CHANNEL, move |message| {
        if let Some(id) = message.as_string() {
            on_cancel(id);
        }
    });
}
