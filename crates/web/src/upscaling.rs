//! The page's upscale action, on a result, a gallery image (in the grid or the review, key U) or
//! a dropped image: the chosen downloaded upscaler runs in the worker, the result goes into the
//! gallery (into the source's brief and iteration, when it has one) and the status line says how
//! it went.

use leptos::prelude::*;

use crate::gallery::Entry;
use crate::protocol::{BriefTag, FromWorker, ToWorker};
use crate::state::{AppState, ModelEntry};

/// The upscaler the actions use: the one picked, else the first downloaded.
pub fn chosen(state: AppState) -> Option<ModelEntry> {
    let all = state.downloaded(darkroom_weights::ModelKind::Upscaler);
    let picked = state.upscaler.get();
    all.iter().find(|m| m.manifest.id == picked).or(all.first()).cloned()
}

/// Upscales `png`; `source` is the gallery image it came from (its model and brief carry over).
pub fn upscale(state: AppState, png: Vec<u8>, source: Option<&Entry>) {
    let Some(model) = state.models.with_untracked(|_| chosen(state)) else {
        state.upscale_status.set(Some(
            "Upscaling needs an upscaler: download “Real-ESRGAN x4plus” or “Real-ESRGAN general x4v3” under Models."
                .into(),
        ));
        return;
    };
    let Some(worker) = state.worker.get_value() else { return };
    let keep = Some(source.map_or_else(|| "upscaled".to_string(), |e| e.model.clone()));
    let brief = source.and_then(|e| {
        e.brief.clone().map(|id| BriefTag { id, iteration: e.iteration, palette: palette(state, e) })
    });
    let name = model.manifest.name.clone();
    state.upscale_status.set(Some(format!("Upscaling with {name}…")));
    let request = ToWorker::Upscale { model: model.model_ref.clone(), keep, brief };
    worker.request(request, vec![png], move |message| match message.body {
        FromWorker::Progress { stage, step, total, .. } => {
            let text = if total > 0 {
                format!("{} tile {step}/{total}", stage.label())
            } else {
                format!("{}…", stage.label())
            };
            state.upscale_status.set(Some(format!("{text} ({name})")));
        }
        FromWorker::Result { images, gallery_error, ms } => {
            state.gallery_version.update(|v| *v += 1);
            let size = images.first().map(|i| format!("{}×{}", i.width, i.height)).unwrap_or_default();
            state.upscale_status.set(Some(match gallery_error {
                Some(e) => format!("Upscaled to {size}, but it could not be kept in the gallery: {e}"),
                None => format!("Upscaled to {size} in {:.1} s: it is in the gallery.", ms / 1000.0),
            }));
        }
        FromWorker::Error { kind, message } => {
            state.upscale_status.set(Some(kind.side_job("Upscaling", "upscale", &message)));
        }
        _ => {}
    });
}

/// The palette of the brief `entry` belongs to (the upscaled image is scored against it too).
fn palette(state: AppState, entry: &Entry) -> Vec<[u8; 3]> {
    state.briefs.with_untracked(|list| {
        list.iter()
            .find(|b| Some(&b.id) == entry.brief.as_ref())
            .map(|b| b.constraints.palette_rgb())
            .unwrap_or_default()
    })
}

/// The upscaler picker (hidden until one is downloaded).
#[component]
pub fn UpscalerPicker() -> impl IntoView {
    let state = expect_context::<AppState>();
    move || {
        let all = state.downloaded(darkroom_weights::ModelKind::Upscaler);
        (!all.is_empty()).then(|| {
            let current = chosen(state).map(|m| m.manifest.id).unwrap_or_default();
            view! {
                <label class="field narrow upscaler-pick"><span>"Upscaler"</span>
                    <select id="upscaler" on:change=move |ev| state.upscaler.set(event_target_value(&ev))>
                        {all.into_iter().map(|m| {
                            let id = m.manifest.id.clone();
                            let selected = id == current;
                            view! { <option value=id selected=selected>{m.manifest.name.clone()}</option> }
                        }).collect_view()}
                    </select>
                </label>
            }
        })
    }
}

/// An "Upscale" button for `png` (without a downloaded upscaler, pressing it says what to get).
pub fn button(state: AppState, png: Vec<u8>, source: Option<Entry>) -> impl IntoView {
    let title = move || match chosen(state) {
        Some(m) => format!("Upscale with {} (kept in the gallery)", m.manifest.name),
        None => "Download an upscaler under Models first".to_string(),
    };
    view! {
        <button type="button" class="upscale" title=title
            on:click=move |_| upscale(state, png.clone(), source.as_ref())>"Upscale"</button>
    }
}
