use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::{Clamped, JsCast};
use wasm_bindgen_futures::JsFuture;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, ImageBitmap};

use darkroom_pipeline::{outpaint_canvas, Image};

use crate::state::encode_png;
use crate::state::{png_url, AppState, InitImage};

/// The longest side an init image is scaled down to.
const MAX_INIT_SIDE: f64 = 1024.0;
const MASK_ID: &str = "mask-canvas";

fn context(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok().flatten()?.dyn_into().ok()
}

fn mask_canvas() -> Option<HtmlCanvasElement> {
    web_sys::window()?.document()?.get_element_by_id(MASK_ID)?.dyn_into().ok()
}

/// The painted mask at `width`×`height` as PNG (white repaints), `None` if nothing is painted.
pub fn mask_png(width: usize, height: usize) -> Option<Vec<u8>> {
    let canvas = mask_canvas()?;
    if (canvas.width() as usize, canvas.height() as usize) != (width, height) {
        return None;
    }
    let data = context(&canvas)?.get_image_data(0.0, 0.0, width as f64, height as f64).ok()?.data();
    let mut painted = false;
    let rgba: Vec<u8> = data
        .chunks_exact(4)
        .flat_map(|px| {
            let on = px[3] > 127;
            painted |= on;
            let v = if on { 255 } else { 0 };
            [v, v, v, 255]
        })
        .collect();
    painted.then(|| encode_png(width, height, &rgba))
}

/// Decodes any image the browser can read, drawn at the size `size` picks from its own:
/// (width, height, RGBA).
pub async fn decode_image(
    blob: web_sys::Blob,
    size: impl FnOnce(f64, f64) -> (usize, usize),
) -> Result<(usize, usize, Vec<u8>), &'static str> {
    let window = web_sys::window().ok_or("no window")?;
    let promise = window.create_image_bitmap_with_blob(&blob).map_err(|_| "cannot read that file")?;
    let bitmap: ImageBitmap = JsFuture::from(promise)
        .await
        .map_err(|_| "that file is not an image the browser can read")?
        .unchecked_into();
    let (w, h) = size(bitmap.width() as f64, bitmap.height() as f64);
    let canvas: HtmlCanvasElement = window
        .document()
        .ok_or("no document")?
        .create_element("canvas")
        .map_err(|_| "no canvas")?
        .unchecked_into();
    canvas.set_width(w as u32);
    canvas.set_height(h as u32);
    let ctx = context(&canvas).ok_or("no 2d canvas")?;
    ctx.draw_image_with_image_bitmap_and_dw_and_dh(&bitmap, 0.0, 0.0, w as f64, h as f64)
        .map_err(|_| "cannot draw the image")?;
    let data = ctx.get_image_data(0.0, 0.0, w as f64, h as f64).map_err(|_| "cannot read the pixels")?;
    Ok((w, h, data.data().to_vec()))
}

/// Decodes any image the browser can read, scales it to fit `MAX_INIT_SIDE` with sides that
/// are multiples of 8, and makes it the init image; the size fields follow it.
pub fn load_init_image(state: AppState, blob: web_sys::Blob) {
    spawn_local(async move {
        let original = blob.clone();
        let outcome = decode_image(blob, |w0, h0| {
            let scale = (MAX_INIT_SIDE / w0.max(h0)).min(1.0);
            (
                ((w0 * scale / 8.0).floor() as usize * 8).max(8),
                ((h0 * scale / 8.0).floor() as usize * 8).max(8),
            )
        })
        .await
        .map(|(w, h, rgba)| {
            let png = encode_png(w, h, &rgba);
            InitImage { width: w, height: h, url: png_url(&png), png, original: Some(original) }
        });
        match outcome {
            Ok(init) => {
                state.settings.width.set(init.width);
                state.settings.height.set(init.height);
                if let Some(old) = state.settings.init.get_untracked() {
                    let _ = web_sys::Url::revoke_object_url(&old.url);
                }
                state.settings.init.set(Some(init));
            }
            Err(e) => state.error.set(Some(format!("The image could not be used: {e}."))),
        }
    });
}

/// The init image upscaled at the size of the file it came from (the form's copy is resized).
fn upscale_init(state: AppState) {
    let Some(init) = state.settings.init.get_untracked() else { return };
    spawn_local(async move {
        let png = match init.original {
            Some(blob) => match decode_image(blob, |w, h| (w as usize, h as usize)).await {
                Ok((w, h, rgba)) => encode_png(w, h, &rgba),
                Err(e) => {
                    state.upscale_status.set(Some(format!("The image could not be read: {e}.")));
                    return;
                }
            },
            None => init.png,
        };
        crate::upscaling::upscale(state, png, None);
    });
}

fn file_from_input(ev: &leptos::ev::Event) -> Option<web_sys::File> {
    let input: web_sys::HtmlInputElement = ev.target()?.dyn_into().ok()?;
    input.files()?.get(0)
}

/// img2img and inpainting: the init image (pick or drop), the strength, and a mask painted
/// with a brush (size, erase, clear, invert). Outpainting: extend the canvas on any side; the
/// new area (and an 8-pixel seam) becomes the mask.
#[component]
pub fn ImageInput() -> impl IntoView {
    let state = expect_context::<AppState>();
    let s = state.settings;
    let brush = RwSignal::new(32.0f64);
    let erasing = RwSignal::new(false);
    let drawing = RwSignal::new(None::<(f64, f64)>);
    let canvas_ref = NodeRef::<leptos::html::Canvas>::new();
    // Outpainting: pixels to add per press, and the mask to paint once the new canvas exists.
    let extend_by = RwSignal::new(64usize);
    let pending_mask = RwSignal::new(None::<Vec<u8>>);
    Effect::new(move |_| {
        let (Some(canvas), Some(mask)) = (canvas_ref.get(), pending_mask.get()) else { return };
        let Some(ctx) = context(&canvas) else { return };
        let mut px = mask;
        for p in px.chunks_exact_mut(4) {
            let on = p[0] > 127;
            p.copy_from_slice(if on { &[255, 255, 255, 255] } else { &[0, 0, 0, 0] });
        }
        if let Ok(img) = web_sys::ImageData::new_with_u8_clamped_array_and_sh(
            Clamped(&px),
            canvas.width(),
            canvas.height(),
        ) {
            let _ = ctx.put_image_data(&img, 0.0, 0.0);
        }
        pending_mask.set(None);
    });
    let set_extend_by = move |ev: leptos::ev::Event| {
        let value: Option<usize> = event_target_value(&ev).trim().parse().ok();
        if let Some(v) = value {
            extend_by.set((v / 8 * 8).max(8));
        }
    };
    let extend = move |side: usize| {
        let Some(init) = s.init.get_untracked() else { return };
        let mut margins = [0usize; 4];
        margins[side] = extend_by.get_untracked();
        let outcome = Image::from_png(&init.png).and_then(|img| outpaint_canvas(&img, margins, 8));
        match outcome {
            Ok((canvas, mask)) => {
                let png = encode_png(canvas.width, canvas.height, &canvas.rgba);
                let _ = web_sys::Url::revoke_object_url(&init.url);
                s.width.set(canvas.width);
                s.height.set(canvas.height);
                s.inpaint.set(true);
                s.strength.set(1.0);
                s.init.set(Some(InitImage {
                    width: canvas.width,
                    height: canvas.height,
                    url: png_url(&png),
                    png,
                    original: None,
                }));
                pending_mask.set(Some(mask.rgba));
            }
            Err(e) => state.error.set(Some(format!("The canvas cannot be extended: {e}"))),
        }
    };

    let at = move |ev: &web_sys::PointerEvent| -> Option<(HtmlCanvasElement, f64, f64)> {
        let canvas: HtmlCanvasElement = canvas_ref.get()?;
        let rect = canvas.get_bounding_client_rect();
        let sx = canvas.width() as f64 / rect.width().max(1.0);
        let sy = canvas.height() as f64 / rect.height().max(1.0);
        Some((canvas, (ev.client_x() as f64 - rect.left()) * sx, (ev.client_y() as f64 - rect.top()) * sy))
    };
    let stroke = move |canvas: &HtmlCanvasElement, from: (f64, f64), to: (f64, f64)| {
        let Some(ctx) = context(canvas) else { return };
        let _ = ctx.set_global_composite_operation(if erasing.get_untracked() {
            "destination-out"
        } else {
            "source-over"
        });
        ctx.set_stroke_style_str("#fff");
        ctx.set_line_width(brush.get_untracked());
        ctx.set_line_cap("round");
        ctx.begin_path();
        ctx.move_to(from.0, from.1);
        ctx.line_to(to.0 + 0.01, to.1);
        ctx.stroke();
    };
    let down = move |ev: web_sys::PointerEvent| {
        if let Some((canvas, x, y)) = at(&ev) {
            let _ = canvas.set_pointer_capture(ev.pointer_id());
            stroke(&canvas, (x, y), (x, y));
            drawing.set(Some((x, y)));
        }
    };
    let moved = move |ev: web_sys::PointerEvent| {
        if let (Some(last), Some((canvas, x, y))) = (drawing.get_untracked(), at(&ev)) {
            stroke(&canvas, last, (x, y));
            drawing.set(Some((x, y)));
        }
    };
    let up = move |_| drawing.set(None);
    let clear = move |_| {
        if let Some(canvas) = canvas_ref.get() {
            if let Some(ctx) = context(&canvas) {
                ctx.clear_rect(0.0, 0.0, canvas.width() as f64, canvas.height() as f64);
            }
        }
    };
    let invert = move |_| {
        let Some(canvas) = canvas_ref.get() else { return };
        let Some(ctx) = context(&canvas) else { return };
        let (w, h) = (canvas.width(), canvas.height());
        let Ok(data) = ctx.get_image_data(0.0, 0.0, w as f64, h as f64) else { return };
        let mut px = data.data().0;
        for p in px.chunks_exact_mut(4) {
            let on = p[3] > 127;
            p.copy_from_slice(if on { &[0, 0, 0, 0] } else { &[255, 255, 255, 255] });
        }
        if let Ok(img) = web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(&px), w, h) {
            let _ = ctx.put_image_data(&img, 0.0, 0.0);
        }
    };
    let remove = move |_| {
        if let Some(old) = s.init.get_untracked() {
            let _ = web_sys::Url::revoke_object_url(&old.url);
        }
        s.init.set(None);
        s.inpaint.set(false);
    };
    view! {
        <fieldset class="image-input">
            <legend>"Image to image · inpainting"</legend>
            {move || match s.init.get() {
                None => view! {
                    <p class="muted small">"Drop an image anywhere on the page, or "
                        <label class="file-pick">"pick one"
                            <input id="init-file" type="file" accept="image/*" on:change=move |ev| {
                                if let Some(f) = file_from_input(&ev) { load_init_image(state, f.into()) }
                            } />
                        </label>
                        ". A PNG made by Darkroom, A1111 or ComfyUI restores its settings instead."</p>
                }.into_any(),
                Some(init) => view! {
                    <div class="init">
                        <div class="mask-stack" style:aspect-ratio=format!("{} / {}", init.width, init.height)>
                            <img src=init.url.clone() alt="init image" />
                            <canvas id=MASK_ID node_ref=canvas_ref width=init.width height=init.height
                                class:active=move || s.inpaint.get()
                                on:pointerdown=move |ev| if s.inpaint.get_untracked() { down(ev) }
                                on:pointermove=moved on:pointerup=up on:pointercancel=up></canvas>
                        </div>
                        <div class="row">
                            <label class="field">
                                <span>{move || format!("Strength {:.2}", s.strength.get())}</span>
                                <input id="strength" type="range" min="0.05" max="1" step="0.05" prop:value=move || s.strength.get().to_string()
                                    on:input=move |ev| if let Ok(v) = event_target_value(&ev).parse() { s.strength.set(v) } />
                            </label>
                            <label class="check"><input id="inpaint" type="checkbox" prop:checked=move || s.inpaint.get()
                                on:change=move |ev| s.inpaint.set(event_target_checked(&ev)) />" Paint a mask (inpaint)"</label>
                            <button type="button" on:click=remove>"Remove image"</button>
                            <button type="button" class="upscale" id="init-upscale" title="Upscale this image at its own size (kept in the gallery)"
                                on:click=move |_| upscale_init(state)>"Upscale"</button>
                        </div>
                        <div class="row outpaint">
                            <label class="field narrow">
                                <span>"Extend by"</span>
                                <input id="extend-by" type="number" min="8" max="512" step="8" prop:value=move || extend_by.get().to_string()
                                    on:change=set_extend_by />
                            </label>
                            <button type="button" id="extend-left" title="Outpaint to the left" on:click=move |_| extend(0)>"← Left"</button>
                            <button type="button" id="extend-top" title="Outpaint above" on:click=move |_| extend(1)>"↑ Top"</button>
                            <button type="button" id="extend-right" title="Outpaint to the right" on:click=move |_| extend(2)>"Right →"</button>
                            <button type="button" id="extend-bottom" title="Outpaint below" on:click=move |_| extend(3)>"Bottom ↓"</button>
                        </div>
                        <Show when=move || s.inpaint.get()>
                            <div class="row mask-tools">
                                <label class="field">
                                    <span>{move || format!("Brush {} px", brush.get())}</span>
                                    <input id="brush" type="range" min="2" max="256" prop:value=move || brush.get().to_string()
                                        on:input=move |ev| if let Ok(v) = event_target_value(&ev).parse() { brush.set(v) } />
                                </label>
                                <label class="check"><input id="erase" type="checkbox" prop:checked=move || erasing.get()
                                    on:change=move |ev| erasing.set(event_target_checked(&ev)) />" Erase"</label>
                                <button type="button" id="mask-clear" on:click=clear>"Clear"</button>
                                <button type="button" id="mask-invert" on:click=invert>"Invert"</button>
                            </div>
                            <p class="muted small">"White repaints, the rest is kept."</p>
                        </Show>
                    </div>
                }.into_any(),
            }}
        </fieldset>
    }
}
