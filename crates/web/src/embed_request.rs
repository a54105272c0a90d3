//! A host page's message to the widget, from the browser's value to the form: read into a
//! `host::Value` (only the keys the widget reads, within their limits), checked by
//! `darkroom_pipeline::host` (property-tested natively), then applied to the widget's form.

use js_sys::{Array, ArrayBuffer, JsString, Reflect, Uint8Array};
use leptos::prelude::*;
use wasm_bindgen::{JsCast, JsValue};

use crate::generation;
use crate::state::{png_url, AppState, ControlImage, InitImage, ModelEntry};
use darkroom_pipeline::host::{self, Value, KEYS, MAX_DEPTH, MAX_IMAGE_BYTES, MAX_LIST, MAX_TEXT_BYTES};
use darkroom_pipeline::ModelInfo;

/// The host's message data as the validator reads it: texts and buffers past their limits are
/// not copied (their length is kept), lists are read up to one item past any limit, objects
/// only under the protocol's keys, nothing deeper than `MAX_DEPTH`.
pub fn read_value(v: &JsValue) -> Value {
    read(v, 0)
}

fn read(v: &JsValue, depth: usize) -> Value {
    if v.is_undefined() || v.is_null() {
        return Value::Absent;
    }
    if let Some(b) = v.as_bool() {
        return Value::Bool(b);
    }
    if let Some(n) = v.as_f64() {
        return Value::Number(n);
    }
    if let Some(s) = v.dyn_ref::<JsString>() {
        // UTF-16 units: a text with more of them than the byte limit is past it in UTF-8 too.
        let units = s.length() as usize;
        return if units > MAX_TEXT_BYTES { Value::Oversized(units) } else { Value::Text(s.into()) };
    }
    if let Some(buffer) = v.dyn_ref::<ArrayBuffer>() {
        let bytes = buffer.byte_length() as usize;
        return if bytes > MAX_IMAGE_BYTES {
            Value::Oversized(bytes)
        } else {
            Value::Bytes(Uint8Array::new(buffer).to_vec())
        };
    }
    if depth >= MAX_DEPTH || !v.is_object() {
        return Value::Other;
    }
    if Array::is_array(v) {
        let list: &Array = v.unchecked_ref();
        let n = list.length().min(MAX_LIST as u32);
        return Value::List((0..n).map(|i| read(&list.get(i), depth + 1)).collect());
    }
    let pairs = KEYS
        .iter()
        .filter_map(|key| {
            let value = Reflect::get(v, &(*key).into()).ok().filter(|x| !x.is_undefined())?;
            Some((key.to_string(), read(&value, depth + 1)))
        })
        .collect();
    Value::Map(pairs)
}

/// The model the request runs on, as the validator checks sizes for it.
fn model_info(state: AppState) -> ModelInfo {
    state
        .selected_model()
        .map(|m| generation::model_info(&m))
        .unwrap_or_else(|| ModelInfo::stable_diffusion("this model", false))
}

/// Applies a host's generation parameters to the widget's form, or says what is wrong with
/// them. A host's run uses nothing of the user's own prompt library: no brand preset, styles or
/// dynamic prompt expansion (and, in the worker, no embeddings: the widget's runs skip them).
pub fn apply(state: AppState, params: &Value) -> Result<(), String> {
    let s = state.settings;
    let request = host::read_params(params, &s.recipe.get_untracked(), &model_info(state))?;
    s.preset.set(None);
    s.styles.set(Vec::new());
    s.dynamic.set(darkroom_pipeline::Dynamic::Off);
    s.recipe.set(request.recipe);
    s.control_images.set(
        request
            .control_images
            .into_iter()
            .map(|i| Some(ControlImage { width: i.width, height: i.height, png: i.png }))
            .collect(),
    );
    s.inpaint.set(request.mask.is_some());
    s.mask_png.set(request.mask.map(|m| m.png));
    s.init.set(request.init.map(|i| InitImage {
        width: i.width,
        height: i.height,
        url: png_url(&i.png),
        png: i.png,
        original: None,
    }));
    Ok(())
}

/// A model the form's request needs that is not downloaded here: its id, and its entry when
/// Darkroom knows it (then the user may download it).
#[derive(Clone)]
pub struct Needed {
    pub id: String,
    pub entry: Option<ModelEntry>,
    /// A ControlNet or the depth preprocessor's model (the selected model otherwise).
    pub control: bool,
}

/// What the form's run needs and this browser lacks (tracked: re-run as downloads finish).
/// The host is not told: the request waits for the user to download or refuse.
pub fn missing(state: AppState) -> Vec<Needed> {
    let mut out = Vec::new();
    let model = state.settings.model.get();
    match state.model(&model) {
        Some(m) if m.stored.get().complete => {}
        entry => out.push(Needed { id: model, entry, control: false }),
    }
    let controls = state.settings.recipe.with(|r| r.controls.clone());
    // Depth units run a depth model in the worker (the built-in one unless another is stored).
    if controls.iter().any(|u| u.pre == darkroom_pipeline::Preprocessor::Depth)
        && state.downloaded(darkroom_weights::ModelKind::Depth).is_empty()
    {
        let id = darkroom_pipeline::depth::DEFAULT_MODEL.to_string();
        out.push(Needed { entry: state.model(&id), id, control: true });
    }
    for unit in controls {
        match state.model(&unit.model) {
            Some(m) if m.manifest.family.is_controlnet() && m.stored.get().complete => {}
            Some(m) if m.manifest.family.is_controlnet() => {
                out.push(Needed { id: unit.model, entry: Some(m), control: true })
            }
            _ => out.push(Needed { id: unit.model, entry: None, control: true }),
        }
    }
    out
}
