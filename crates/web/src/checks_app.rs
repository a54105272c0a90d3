use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsValue;

use crate::components::capability_panel::CapabilityPanel;
use crate::components::model_check_panel::{ModelCheckPanel, ModelCheckState};
use crate::components::selftest_panel::{SelftestPanel, SelftestState};
use crate::model_check::{self, ModelCheck};
use crate::probe::probe;
use crate::weights_check;
use darkroom_gpu::selftest::{self, KernelCheck, MatmulReport};
use darkroom_gpu::{DType, Gpu, Requirements};

/// The developer check pages (`?check=selftest|models|weights`): the GPU self-test, the models
/// against reference outputs, the download code against a fault-injecting server.
#[component]
pub fn ChecksApp() -> impl IntoView {
    let (probe_result, set_probe_result) = signal(None);
    let (selftest_state, set_selftest_state) = signal(SelftestState::Waiting);
    let fixtures = model_check::requested();
    let (model_state, set_model_state) = signal(ModelCheckState::Running);
    let show_model_check = fixtures.is_some();
    let weights = weights_check::requested();
    let show_weights = weights.is_some();
    let (weights_progress, set_weights_progress) = signal((0u64, 0u64, String::new()));
    let (weights_outcome, set_weights_outcome) = signal(None::<weights_check::Outcome>);
    if let Some(request) = weights {
        // Downloads need no GPU: start at once.
        spawn_local(async move {
            let mut progress =
                |done, total, path: &str| set_weights_progress.set((done, total, path.to_string()));
            let outcome = weights_check::run(&request, &mut progress).await;
            set_weights_outcome.set(Some(outcome));
        });
    }

    spawn_local(async move {
        let result = probe().await;
        let usable = result.is_ok();
        set_probe_result.set(Some(result));
        if !usable {
            set_selftest_state.set(SelftestState::Skipped);
            return;
        }
        set_selftest_state.set(SelftestState::Running);
        let gpu = match Gpu::open(&Requirements::default()).await {
            Ok(gpu) => gpu,
            Err(e) => {
                set_selftest_state.set(SelftestState::Failed(e.to_string()));
                set_model_state.set(ModelCheckState::Failed(e.to_string()));
                return;
            }
        };
        let outcome = async {
            let (m, k, n) = selftest::MATMUL_SHAPE;
            let matmul = selftest::matmul_check(&gpu, m, k, n, selftest::MATMUL_SEED).await?;
            let mut kernels = vec![(DType::F32, selftest::kernel_suite(&gpu, DType::F32).await?)];
            if gpu.capabilities().shader_f16 {
                kernels.push((DType::F16, selftest::kernel_suite(&gpu, DType::F16).await?));
            }
            Ok::<_, darkroom_gpu::GpuError>((matmul, kernels))
        }
        .await;
        set_selftest_state.set(match outcome {
            Ok((matmul, kernels)) => {
                publish(&matmul, &kernels);
                SelftestState::Done { matmul, kernels }
            }
            Err(e) => SelftestState::Failed(e.to_string()),
        });
        if let Some(base) = fixtures {
            let outcome = model_check::run(&gpu, &base).await;
            publish_model_checks(&outcome);
            set_model_state.set(match outcome {
                Ok(checks) => ModelCheckState::Done(checks),
                Err(e) => ModelCheckState::Failed(e),
            });
        }
    });

    view! {
        <header class="top">
            <h1>"Darkroom"</h1>
            <p class="tagline">"Stable Diffusion on your own GPU. Nothing you type or generate leaves this device."</p>
        </header>
        <main>
            <CapabilityPanel probe=probe_result.into() />
            <SelftestPanel state=selftest_state.into() />
            <Show when=move || show_model_check>
                <ModelCheckPanel state=model_state.into() />
            </Show>
            <Show when=move || show_weights>
                <section class="panel">
                    <h2>"Model download"</h2>
                    <progress
                        max=move || weights_progress.get().1.max(1) as f64
                        value=move || weights_progress.get().0 as f64
                    ></progress>
                    <p class="detail">
                        {move || {
                            let (done, total, path) = weights_progress.get();
                            format!("{:.1} of {:.1} MB · {path}", done as f64 / 1e6, total as f64 / 1e6)
                        }}
                    </p>
                    <p class="verdict">
                        {move || match weights_outcome.get() {
                            None => "downloading…".to_string(),
                            Some(Ok((line, _))) => line,
                            Some(Err(e)) => format!("error: {e}"),
                        }}
                    </p>
                    {move || match weights_outcome.get() {
                        Some(Ok((_, Some(url)))) => {
                            Some(view! { <img class="result" src=url alt="the generated image" /> })
                        }
                        _ => None,
                    }}
                </section>
            </Show>
        </main>
    }
}

/// Leaves the raw self-test results on `window.__darkroomSelftest` so the browser test can check
/// the GPU's numbers itself instead of trusting the page's verdict.
fn publish(report: &MatmulReport, kernels: &[(DType, Vec<KernelCheck>)]) {
    let set = |target: &js_sys::Object, key: &str, value: JsValue| {
        let _ = js_sys::Reflect::set(target, &JsValue::from_str(key), &value);
    };
    let obj = js_sys::Object::new();
    set(&obj, "m", (report.m as u32).into());
    set(&obj, "k", (report.k as u32).into());
    set(&obj, "n", (report.n as u32).into());
    set(&obj, "seed", report.seed.into());
    set(&obj, "passed", report.passed.into());
    set(&obj, "maxAbsErr", report.max_abs_err.into());
    set(&obj, "output", js_sys::Float32Array::from(report.output.as_slice()).into());
    let checks = js_sys::Array::new();
    for (dtype, list) in kernels {
        for check in list {
            let entry = js_sys::Object::new();
            set(&entry, "name", check.name.into());
            set(&entry, "dtype", format!("{dtype:?}").into());
            set(&entry, "passed", check.passed.into());
            set(&entry, "maxAbsErr", check.max_abs_err.into());
            checks.push(&entry);
        }
    }
    set(&obj, "kernels", checks.into());
    set(&js_sys::global().into(), "__darkroomSelftest", obj.into());
}

/// Leaves the model checks on `window.__darkroomModelCheck` for the browser test.
fn publish_model_checks(outcome: &Result<Vec<ModelCheck>, String>) {
    let set = |target: &js_sys::Object, key: &str, value: JsValue| {
        let _ = js_sys::Reflect::set(target, &JsValue::from_str(key), &value);
    };
    let obj = js_sys::Object::new();
    match outcome {
        Ok(checks) => {
            let list = js_sys::Array::new();
            for check in checks {
                let entry = js_sys::Object::new();
                set(&entry, "name", check.name.into());
                set(&entry, "maxAbsErr", check.max_abs_err.into());
                set(&entry, "bound", check.bound.into());
                set(&entry, "passed", check.passed().into());
                list.push(&entry);
            }
            set(&obj, "checks", list.into());
        }
        Err(e) => set(&obj, "error", e.as_str().into()),
    }
    set(&js_sys::global(), "__darkroomModelCheck", obj.into());
}
