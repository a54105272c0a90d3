use leptos::prelude::*;

use crate::report::{format_bytes, AdapterReport, Level, Unavailable};
use darkroom_gpu::Requirements;

/// Shows the browser's WebGPU adapter and what it can do, or why there is none and what to do.
#[component]
pub fn CapabilityPanel(
    /// The probe's outcome; `None` while the browser is still answering.
    probe: Signal<Option<Result<AdapterReport, Unavailable>>>,
) -> impl IntoView {
    move || {
        match probe.get() {
        None => view! {
            <section class="panel" id="capabilities" data-state="probing">
                <h2>"Your GPU"</h2>
                <p class="muted">"Asking the browser for a WebGPU adapter…"</p>
            </section>
        }
        .into_any(),
        Some(Err(why)) => view! {
            <section class="panel panel-error" id="capabilities" data-state="unavailable" role="alert">
                <h2>{why.headline()}</h2>
                <p>"Darkroom runs Stable Diffusion on your own GPU through WebGPU, so it cannot work here yet."</p>
                <ul class="advice">
                    {why.advice().into_iter().map(|line| view! { <li>{line}</li> }).collect_view()}
                </ul>
            </section>
        }
        .into_any(),
        Some(Ok(report)) => adapter_view(report).into_any(),
    }
    }
}

fn yes_no(v: bool) -> &'static str {
    if v {
        "yes"
    } else {
        "no"
    }
}

fn adapter_view(report: AdapterReport) -> impl IntoView {
    let notices = report.notices(&Requirements::default());
    let rows: Vec<(&'static str, String)> = vec![
        ("adapter", report.title()),
        ("description", if report.description.is_empty() { "—".into() } else { report.description.clone() }),
        ("shader-f16", yes_no(report.shader_f16).into()),
        ("subgroups", yes_no(report.subgroups).into()),
        ("maxBufferSize", format_bytes(report.max_buffer_size)),
        ("maxStorageBufferBindingSize", format_bytes(report.max_storage_buffer_binding_size)),
        ("maxComputeWorkgroupStorageSize", format_bytes(report.max_compute_workgroup_storage_size)),
        ("maxComputeInvocationsPerWorkgroup", report.max_compute_invocations_per_workgroup.to_string()),
    ];
    view! {
        <section class="panel" id="capabilities" data-state="ready">
            <h2>"Your GPU"</h2>
            <dl class="facts">
                {rows
                    .into_iter()
                    .map(|(key, value)| view! {
                        <div class="fact" data-key=key>
                            <dt>{key}</dt>
                            <dd>{value}</dd>
                        </div>
                    })
                    .collect_view()}
            </dl>
            <ul class="notices">
                {notices
                    .into_iter()
                    .map(|n| {
                        let class = match n.level {
                            Level::Ok => "notice ok",
                            Level::Warn => "notice warn",
                            Level::Error => "notice error",
                        };
                        view! { <li class=class>{n.text}</li> }
                    })
                    .collect_view()}
            </ul>
        </section>
    }
}
