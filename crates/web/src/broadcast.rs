//! BroadcastChannel messages between the pages and workers of this origin (tabs, the widget on
//! Darkroom's storage): what one of them changed that the others must know.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Sends `message` to every other listener on `channel`.
pub fn post(channel: &str, message: &JsValue) {
    if let Ok(sender) = web_sys::BroadcastChannel::new(channel) {
        let _ = sender.post_message(message);
        sender.close();
    }
}

/// Calls `on_message` with each message on `channel`, for the context's lifetime.
pub fn listen(channel: &str, on_message: impl Fn(JsValue) + 'static) {
    let Ok(receiver) = web_sys::BroadcastChannel::new(channel) else { return };
    let handler = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
        on_message(event.data())
    });
    receiver.set_onmessage(Some(handler.as_ref().unchecked_ref()));
    handler.forget();
    // Kept open: closing it would stop the messages.
    std::mem::forget(receiver);
}
