//! Whether the embedded widget is visibly on screen, for the buttons a host page could trick a
//! user into clicking (consent, download, Darkroom's storage): an IntersectionObserver v2
//! (`trackVisibility`) on the widget says whether it is unoccluded, unfaded and untransformed;
//! such a click acts only when the widget has been visible for [`DELAY_MS`], otherwise the
//! widget says why and offers Darkroom's own window. Where the browser has no `trackVisibility`
//! (it cannot tell), the delay alone applies.

use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// How long the widget must have been visible before a guarded click acts.
pub const DELAY_MS: f64 = 500.0;

#[derive(Clone, Copy)]
pub struct Guard {
    /// Since when (ms, `Date.now()`) the widget has been visible; `None` while it is not.
    visible_since: RwSignal<Option<f64>>,
    /// Why the last guarded click did not act, while it is shown.
    pub refused: RwSignal<Option<&'static str>>,
}

impl Guard {
    /// A guard that counts the widget visible from now until an observer says otherwise.
    pub fn new() -> Guard {
        Guard { visible_since: RwSignal::new(Some(js_sys::Date::now())), refused: RwSignal::new(None) }
    }

    /// Watches `root` (the widget's outermost element) from now on.
    pub fn observe(self, root: &web_sys::Element) {
        let guard = self;
        let callback = Closure::<dyn FnMut(js_sys::Array)>::new(move |entries: js_sys::Array| {
            for entry in entries.iter() {
                let visible =
                    js_sys::Reflect::get(&entry, &"isVisible".into()).ok().and_then(|v| v.as_bool());
                match visible {
                    Some(visible) => {
                        let since = guard.visible_since.get_untracked();
                        guard.visible_since.set(match (visible, since) {
                            (true, Some(t)) => Some(t),
                            (true, None) => Some(js_sys::Date::now()),
                            (false, _) => None,
                        });
                    }
                    // No IntersectionObserver v2: the delay alone applies.
                    None => {}
                }
            }
        });
        let options = js_sys::Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = js_sys::Reflect::set(&options, &k.into(), &v);
        };
        set("threshold", js_sys::Array::of1(&0.0.into()).into());
        set("trackVisibility", true.into());
        // The smallest delay v2 allows: how often visibility is computed at most.
        set("delay", 100.into());
        let constructor = js_sys::Reflect::get(&js_sys::global(), &"IntersectionObserver".into())
            .ok()
            .and_then(|c| c.dyn_into::<js_sys::Function>().ok());
        if let Some(constructor) = constructor {
            let args = js_sys::Array::of2(callback.as_ref(), &options);
            if let Ok(observer) = js_sys::Reflect::construct(&constructor, &args) {
                if let Ok(observe) = js_sys::Reflect::get(&observer, &"observe".into())
                    .and_then(|f| f.dyn_into::<js_sys::Function>())
                {
                    let _ = observe.call1(&observer, root);
                }
            }
        }
        callback.forget();
    }

    /// Whether a click may act now; if not, says why (shown until the next click that acts).
    pub fn allows(&self) -> bool {
        let now = js_sys::Date::now();
        let outcome = match self.visible_since.get_untracked() {
            None => Err("This widget is covered, faded or transformed by the page around it, so it cannot take that click."),
            Some(t) if now - t < DELAY_MS => Err("This widget only just became visible: look before you click, then click again."),
            Some(_) => Ok(()),
        };
        self.refused.set(outcome.err());
        outcome.is_ok()
    }
}
