use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsValue;

use crate::components::capability_panel::CapabilityPanel;
use crate::components::selftest_panel::{SelftestPanel, SelftestState};
use crate::probe::probe;
use darkroom_gpu::selftest::{self, MatmulReport};
use darkroom_gpu::{Gpu, Requirements};

#[component]
pub fn App() -> impl IntoView {
    let (probe_result, set_probe_result) = signal(None);
    let (selftest_state, set_selftest_state) = signal(SelftestState::Waiting);

    spawn_local(async move {
        let result = probe().await;
        let usable = result.is_ok();
        set_probe_result.set(Some(result));
        if !usable {
            set_selftest_state.set(SelftestState::Skipped);
            return;
        }
        set_selftest_state.set(SelftestState::Running);
        let outcome = async {
            let gpu = Gpu::open(&Requirements::default()).await?;
            let (m, k, n) = selftest::MATMUL_SHAPE;
            selftest::matmul_check(&gpu, m, k, n, selftest::MATMUL_SEED).await
        }
        .await;
        set_selftest_state.set(match outcome {
            Ok(report) => {
                publish(&report);
                SelftestState::Done(report)
            }
            Err(e) => SelftestState::Failed(e.to_string()),
        });
    });

    view! {
        <header class="top">
            <h1>"Darkroom"</h1>
            <p class="tagline">"Stable Diffusion on your own GPU. Nothing you type or generate leaves this device."</p>
        </header>
        <main>
            <CapabilityPanel probe=probe_result.into() />
            <SelftestPanel state=selftest_state.into() />
        </main>
    }
}

/// Leaves the raw self-test result on `window.__darkroomSelftest` so the browser test can check
/// the GPU's numbers itself instead of trusting the page's verdict.
fn publish(report: &MatmulReport) {
    let obj = js_sys::Object::new();
    let set = |k: &str, v: JsValue| {
        let _ = js_sys::Reflect::set(&obj, &JsValue::from_str(k), &v);
    };
    set("m", (report.m as u32).into());
    set("k", (report.k as u32).into());
    set("n", (report.n as u32).into());
    set("seed", report.seed.into());
    set("passed", report.passed.into());
    set("maxAbsErr", report.max_abs_err.into());
    set(
        "output",
        js_sys::Float32Array::from(report.output.as_slice()).into(),
    );
    let _ = js_sys::Reflect::set(
        &js_sys::global(),
        &JsValue::from_str("__darkroomSelftest"),
        &obj,
    );
}
