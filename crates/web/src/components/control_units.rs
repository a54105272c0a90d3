//! ControlNet units under Generate: up to three, each with its ControlNet, an image (picked,
//! dropped on the unit, or drawn on a canvas in white on black), a preprocessor whose map is
//! shown before generating, and its weight and guidance start/end. The settings live in the
//! form's recipe (`Recipe::controls`); the images beside it (`Settings::control_images`).

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement};

use darkroom_pipeline::preprocess::{self, Preprocessor};
use darkroom_pipeline::{ControlUnit, Image};

use darkroom_weights::ModelKind;

use crate::protocol::{FromWorker, ToWorker};
use crate::state::{encode_png, png_url, AppState, ControlImage};

/// Units the app offers at once.
pub use darkroom_pipeline::control::MAX_APP_UNITS as MAX_UNITS;
/// The longest side a picked control image is scaled down to.
const MAX_SIDE: f64 = 1024.0;
/// The drawing brush's width in image pixels.
const BRUSH: f64 = 4.0;
/// Shown when no depth model is downloaded.
const DEPTH_MISSING: &str =
    "The depth preprocessor runs Depth Anything V2 Small on the device: download it under Models.";
/// Shown while the worker estimates a depth map.
const DEPTH_PENDING: &str = "Estimating depth on the device…";

fn context(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok().flatten()?.dyn_into().ok()
}

/// Decodes an image file the browser can read (scaled to fit `MAX_SIDE`).
async fn decode(blob: web_sys::Blob) -> Result<ControlImage, &'static str> {
    let (w, h, rgba) = crate::components::image_input::decode_image(blob, |w0, h0| {
        let scale = (MAX_SIDE / w0.max(h0)).min(1.0);
        (((w0 * scale).round() as usize).max(1), ((h0 * scale).round() as usize).max(1))
    })
    .await?;
    Ok(ControlImage { width: w, height: h, png: encode_png(w, h, &rgba) })
}

/// The canvas's pixels as the unit's image.
fn canvas_image(canvas: &HtmlCanvasElement) -> Option<ControlImage> {
    let (w, h) = (canvas.width() as usize, canvas.height() as usize);
    let data = context(canvas)?.get_image_data(0.0, 0.0, w as f64, h as f64).ok()?.data();
    Some(ControlImage { width: w, height: h, png: encode_png(w, h, &data) })
}

/// Adds a unit with the first downloaded ControlNet for the selected model (if any).
fn add_unit(state: AppState) {
    let s = state.settings;
    if s.recipe.with_untracked(|r| r.controls.len()) >= MAX_UNITS {
        return;
    }
    let first = untrack(|| {
        state.models.with(|list| {
            list.iter()
                .find(|m| state.controls_selected(m) && m.stored.get().complete)
                .map(|m| m.manifest.id.clone())
        })
    });
    s.recipe.update(|r| {
        r.controls.push(ControlUnit { model: first.unwrap_or_default(), ..ControlUnit::default() })
    });
    let n = s.recipe.with_untracked(|r| r.controls.len());
    s.control_images.update(|images| images.resize(n, None));
}

#[component]
pub fn ControlUnits() -> impl IntoView {
    let state = expect_context::<AppState>();
    let s = state.settings;
    let count = Memo::new(move |_| s.recipe.with(|r| r.controls.len()));
    // Bumped on removal, so every unit's view (and its canvas) is made afresh.
    let version = RwSignal::new(0u32);
    let remove = move |index: usize| {
        s.recipe.update(|r| {
            if index < r.controls.len() {
                r.controls.remove(index);
            }
        });
        s.control_images.update(|images| {
            if index < images.len() {
                images.remove(index);
            }
        });
        version.update(|v| *v += 1);
    };
    let keys = move || -> Vec<(usize, u32)> { (0..count.get()).map(|i| (i, version.get())).collect() };
    // The units' pickers list the ControlNets made for the selected model's family.
    let sdxl = Memo::new(move |_| state.selected_model().is_some_and(|m| m.manifest.family.is_sdxl()));
    view! {
        <fieldset class="controls" id="controls">
            <legend>"Control (ControlNet)"</legend>
            <For
                each=keys
                key=|k| *k
                children=move |(index, _)| view! { <UnitView index=index remove=remove /> }
            />
            <div class="row">
                <button type="button" id="add-control" disabled=move || { count.get() >= MAX_UNITS }
                    on:click=move |_| add_unit(state)>"+ Control unit"</button>
                <span class="muted small" id="controls-note">{move || if sdxl.get() {
                    "Pins composition, pose, depth or line work to an image with SDXL ControlNets (up to three units)."
                } else {
                    "Pins composition, pose, depth or line work to an image (up to three units)."
                }}</span>
            </div>
        </fieldset>
    }
}

#[component]
fn UnitView(index: usize, remove: impl Fn(usize) + Copy + Send + Sync + 'static) -> impl IntoView {
    let state = expect_context::<AppState>();
    let s = state.settings;
    let unit = Memo::new(move |_| s.recipe.with(|r| r.controls.get(index).cloned().unwrap_or_default()));
    let edit = move |f: &dyn Fn(&mut ControlUnit)| {
        s.recipe.update(|r| {
            if let Some(u) = r.controls.get_mut(index) {
                f(u);
            }
        })
    };
    let image = Memo::new(move |_| s.control_images.with(|v| v.get(index).cloned().flatten()));
    let set_image = move |img: Option<ControlImage>| {
        s.control_images.update(|v| {
            if v.len() <= index {
                v.resize(index + 1, None);
            }
            v[index] = img;
        })
    };
    let error = RwSignal::new(None::<String>);
    let drawing = RwSignal::new(false);
    let source_url = Memo::new(move |_| image.get().map(|i| png_url(&i.png)));
    // Depth maps come from the worker (Depth Anything on the GPU), asked for when a depth
    // unit's image changes: (the image, its map's URL or why there is none).
    let depth_source =
        Memo::new(move |_| (unit.get().pre == Preprocessor::Depth).then(|| image.get()).flatten());
    let depth = RwSignal::new(None::<(ControlImage, Result<String, String>)>);
    Effect::new(move |_| {
        let Some(img) = depth_source.get() else { return };
        if depth.with_untracked(|d| d.as_ref().is_some_and(|(i, made)| *i == img && made.is_ok())) {
            return;
        }
        let Some(worker) = state.worker.get_value() else { return };
        let Some(model) = state.downloaded(ModelKind::Depth).first().map(|m| m.model_ref.clone()) else {
            depth.set(Some((img, Err(DEPTH_MISSING.to_string()))));
            return;
        };
        depth.set(None);
        let png = img.png.clone();
        worker.request(ToWorker::Depth { model }, vec![png], move |message| match message.body {
            FromWorker::Result { .. } => {
                let url = message
                    .bytes
                    .first()
                    .map(|map| png_url(map))
                    .ok_or_else(|| "no depth map came back".to_string());
                depth.set(Some((img.clone(), url)));
            }
            FromWorker::Error { kind, message } => {
                depth.set(Some((
                    img.clone(),
                    Err(kind.side_job("The depth map", "estimate depth", &message)),
                )));
            }
            _ => {}
        });
    });
    // The map the ControlNet will see (at the image's size; the pipeline resizes it).
    let map = Memo::new(move |_| {
        let u = unit.get();
        let img = image.get()?;
        if u.pre == Preprocessor::Depth {
            // None while the worker estimates it (`depth_pending`).
            return depth.get().filter(|(i, _)| *i == img).map(|(_, result)| result);
        }
        let decoded = Image::from_png(&img.png).ok()?;
        Some(match preprocess::run(u.pre, &decoded, u.low, u.high) {
            Ok(m) => Ok(png_url(&encode_png(m.width, m.height, &m.rgba))),
            Err(e) => Err(e.to_string()),
        })
    });
    let depth_pending = Memo::new(move |_| {
        depth_source.get().is_some_and(|img| !depth.with(|d| d.as_ref().is_some_and(|(i, _)| *i == img)))
    });
    Effect::new(move |previous: Option<Option<String>>| {
        let url = source_url.get();
        if let Some(Some(old)) = previous {
            if Some(&old) != url.as_ref() {
                let _ = web_sys::Url::revoke_object_url(&old);
            }
        }
        url
    });
    Effect::new(move |previous: Option<Option<String>>| {
        let url = map.get().and_then(|r| r.ok());
        if let Some(Some(old)) = previous {
            if Some(&old) != url.as_ref() {
                let _ = web_sys::Url::revoke_object_url(&old);
            }
        }
        url
    });

    let nets = move || {
        state
            .models
            .get()
            .into_iter()
            .filter(|m| state.controls_selected(m))
            .map(|m| {
                let id = m.manifest.id.clone();
                let label = if m.stored.get().complete {
                    m.manifest.name.clone()
                } else {
                    format!("{} (not downloaded)", m.manifest.name)
                };
                view! { <option value=id.clone() selected=move || unit.get().model == id>{label}</option> }
            })
            .collect_view()
    };
    let pick = move |blob: web_sys::Blob| {
        spawn_local(async move {
            match decode(blob).await {
                Ok(img) => {
                    error.set(None);
                    drawing.set(false);
                    set_image(Some(img));
                }
                Err(e) => error.set(Some(format!("The image could not be used: {e}."))),
            }
        })
    };
    let canvas_ref = NodeRef::<leptos::html::Canvas>::new();
    let stroke = RwSignal::new(None::<(f64, f64)>);
    // A fresh black canvas at the output size; strokes are white (a scribble map).
    let start_drawing = move |_| {
        drawing.set(true);
        edit(&|u| u.pre = Preprocessor::Scribble);
        set_image(None);
    };
    Effect::new(move |_| {
        if !drawing.get() {
            return;
        }
        let Some(canvas) = canvas_ref.get() else { return };
        let (w, h) = (s.width.get_untracked().max(8), s.height.get_untracked().max(8));
        canvas.set_width(w as u32);
        canvas.set_height(h as u32);
        if let Some(ctx) = context(&canvas) {
            ctx.set_fill_style_str("#000");
            ctx.fill_rect(0.0, 0.0, w as f64, h as f64);
        }
        set_image(canvas_image(&canvas));
    });
    let point = move |ev: &web_sys::PointerEvent| -> Option<(f64, f64)> {
        let canvas = canvas_ref.get()?;
        let rect = canvas.get_bounding_client_rect();
        let x = (ev.client_x() as f64 - rect.left()) * canvas.width() as f64 / rect.width().max(1.0);
        let y = (ev.client_y() as f64 - rect.top()) * canvas.height() as f64 / rect.height().max(1.0);
        Some((x, y))
    };
    let draw_to = move |to: (f64, f64)| {
        let (Some(canvas), Some(from)) = (canvas_ref.get(), stroke.get_untracked()) else { return };
        if let Some(ctx) = context(&canvas) {
            ctx.set_stroke_style_str("#fff");
            ctx.set_line_width(BRUSH);
            ctx.set_line_cap("round");
            ctx.begin_path();
            ctx.move_to(from.0, from.1);
            ctx.line_to(to.0, to.1);
            ctx.stroke();
        }
        stroke.set(Some(to));
    };
    let end_stroke = move || {
        if stroke.get_untracked().is_some() {
            stroke.set(None);
            if let Some(canvas) = canvas_ref.get() {
                set_image(canvas_image(&canvas));
            }
        }
    };

    // A number input for one of the unit's fields: (max, step); the minimum is 0.
    let field = move |label: &'static str,
                      class: &'static str,
                      (max, step): (f64, f64),
                      read: fn(&ControlUnit) -> f64,
                      write: fn(&mut ControlUnit, f64)| {
        view! {
            <label class="field narrow">
                <span>{label}</span>
                <input class=class type="number" min="0" max=max step=step
                    prop:value=move || read(&unit.get()).to_string()
                    on:change=move |ev| {
                        if let Ok(v) = event_target_value(&ev).trim().parse::<f64>() { edit(&|u| write(u, v)) }
                    } />
            </label>
        }
    };
    let n = index + 1;
    view! {
        <div class="control-unit" data-unit=index
            on:dragover=|ev: web_sys::DragEvent| ev.prevent_default()
            on:drop=move |ev: web_sys::DragEvent| {
                ev.prevent_default();
                ev.stop_propagation();
                if let Some(file) = ev.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) {
                    pick(file.into());
                }
            }>
            <div class="row">
                <strong>{format!("Unit {n}")}</strong>
                <button type="button" class="icon control-remove" title=format!("Remove unit {n}")
                    on:click=move |_| remove(index)>"Remove"</button>
            </div>
            <div class="row">
                <label class="field">
                    <span>"ControlNet"</span>
                    <select class="control-model" on:change=move |ev| { let v = event_target_value(&ev); edit(&|u| u.model = v.clone()) }>
                        <option value="" disabled=true selected=move || unit.get().model.is_empty()>"Pick a ControlNet"</option>
                        {nets}
                    </select>
                </label>
                <label class="field">
                    <span>"Preprocessor"</span>
                    <select class="control-pre" on:change=move |ev| {
                        if let Ok(p) = event_target_value(&ev).parse::<Preprocessor>() { edit(&|u| u.pre = p) }
                    }>
                        {Preprocessor::ALL.into_iter().map(|p| view! {
                            <option value=p.id() selected=move || unit.get().pre == p>{p.id()}</option>
                        }).collect_view()}
                    </select>
                </label>
            </div>
            <div class="row">
                {field("Weight", "control-weight", (2.0, 0.05), |u| u.weight, |u, v| u.weight = v)}
                {field("Start", "control-start", (1.0, 0.05), |u| u.start, |u, v| u.start = v)}
                {field("End", "control-end", (1.0, 0.05), |u| u.end, |u, v| u.end = v)}
                <Show when=move || unit.get().pre == Preprocessor::Canny>
                    {field("Low", "control-low", (1000.0, 10.0), |u| u.low, |u, v| u.low = v)}
                    {field("High", "control-high", (1000.0, 10.0), |u| u.high, |u, v| u.high = v)}
                </Show>
            </div>
            <div class="row">
                <label class="button-like">
                    "Pick image…"
                    <input type="file" accept="image/*" class="control-file visually-hidden" on:change=move |ev| {
                        let input: Option<web_sys::HtmlInputElement> = ev.target().and_then(|t| t.dyn_into().ok());
                        if let Some(file) = input.and_then(|i| i.files()).and_then(|f| f.get(0)) { pick(file.into()) }
                    } />
                </label>
                <button type="button" class="control-draw" on:click=start_drawing>"Draw"</button>
                <span class="muted small">"or drop an image on this unit"</span>
            </div>
            {move || error.get().map(|e| view! { <p class="error small">{e}</p> })}
            <div class="control-images">
                <Show when=move || drawing.get()>
                    <canvas class="control-canvas" node_ref=canvas_ref
                        on:pointerdown=move |ev: web_sys::PointerEvent| { ev.prevent_default(); stroke.set(point(&ev)); if let Some(p) = point(&ev) { draw_to(p) } }
                        on:pointermove=move |ev: web_sys::PointerEvent| if stroke.get_untracked().is_some() { if let Some(p) = point(&ev) { draw_to(p) } }
                        on:pointerup=move |_| end_stroke()
                        on:pointerleave=move |_| end_stroke()></canvas>
                </Show>
                <Show when=move || !drawing.get() && image.get().is_some()>
                    <figure>
                        <img class="control-source" alt=format!("unit {n}'s image")
                            src=move || source_url.get().unwrap_or_default() />
                        <figcaption class="muted small">"image"</figcaption>
                    </figure>
                </Show>
                {move || map.get().map(|m| match m {
                    Ok(url) => view! {
                        <figure>
                            <img class="control-map" src=url alt=format!("unit {n}'s control map") />
                            <figcaption class="muted small">"control map"</figcaption>
                        </figure>
                    }.into_any(),
                    Err(e) => view! { <p class="error small">{e}</p> }.into_any(),
                })}
                <Show when=move || depth_pending.get()>
                    <p class="muted small control-pending">{DEPTH_PENDING}</p>
                </Show>
            </div>
        </div>
    }
}
