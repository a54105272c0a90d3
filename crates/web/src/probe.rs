//! Asks the browser's WebGPU API directly what adapter it has. wgpu's WebGPU backend hides the
//! adapter's vendor/architecture strings and the subgroups feature, so the capability screen
//! reads them from `navigator.gpu` itself.

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::report::{AdapterReport, Unavailable};

fn get(target: &JsValue, key: &str) -> JsValue {
    Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn get_string(target: &JsValue, key: &str) -> String {
    get(target, key).as_string().unwrap_or_default()
}

fn get_u64(target: &JsValue, key: &str) -> u64 {
    get(target, key).as_f64().map(|v| v as u64).unwrap_or(0)
}

fn describe(err: &JsValue) -> String {
    err.as_string().or_else(|| get(err, "message").as_string()).unwrap_or_else(|| format!("{err:?}"))
}

pub async fn probe() -> Result<AdapterReport, Unavailable> {
    let global = js_sys::global();
    let secure_context = get(&global, "isSecureContext").as_bool().unwrap_or(false);
    let gpu = get(&get(&global, "navigator"), "gpu");
    if gpu.is_undefined() || gpu.is_null() {
        return Err(Unavailable::NoApi { secure_context });
    }
    let request: Function =
        get(&gpu, "requestAdapter").dyn_into().map_err(|_| Unavailable::NoApi { secure_context })?;
    let options = js_sys::Object::new();
    let _ = Reflect::set(&options, &"powerPreference".into(), &"high-performance".into());
    let promise: Promise = request
        .call1(&gpu, &options)
        .map_err(|e| Unavailable::Failed(describe(&e)))?
        .dyn_into()
        .map_err(|_| Unavailable::Failed("requestAdapter did not return a promise".into()))?;
    let adapter = JsFuture::from(promise).await.map_err(|e| Unavailable::Failed(describe(&e)))?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err(Unavailable::NoAdapter);
    }

    let info = get(&adapter, "info");
    let features = get(&adapter, "features");
    let has = |name: &str| -> bool {
        get(&features, "has")
            .dyn_into::<Function>()
            .ok()
            .and_then(|f| f.call1(&features, &JsValue::from_str(name)).ok())
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    };
    let limits = get(&adapter, "limits");
    Ok(AdapterReport {
        vendor: get_string(&info, "vendor"),
        architecture: get_string(&info, "architecture"),
        device: get_string(&info, "device"),
        description: get_string(&info, "description"),
        is_fallback: get(&info, "isFallbackAdapter")
            .as_bool()
            .or_else(|| get(&adapter, "isFallbackAdapter").as_bool())
            .unwrap_or(false),
        shader_f16: has("shader-f16"),
        subgroups: has("subgroups"),
        max_buffer_size: get_u64(&limits, "maxBufferSize"),
        max_storage_buffer_binding_size: get_u64(&limits, "maxStorageBufferBindingSize"),
        max_compute_workgroup_storage_size: get_u64(&limits, "maxComputeWorkgroupStorageSize"),
        max_compute_invocations_per_workgroup: get_u64(&limits, "maxComputeInvocationsPerWorkgroup"),
    })
}
