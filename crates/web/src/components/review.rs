//! Review at full size, by keyboard: ← → move, 1–5 stars (0 clears), K keep, X reject (the
//! reason field takes the focus; Enter confirms), F final, N note, D finishes a draft, U upscales, Esc closes. The same view
//! serves the brief board and the gallery.

use darkroom_workflow::brief::{ordered_scores, score_label, score_text, Culling, Verdict};
use leptos::ev;
use leptos::prelude::*;

use crate::briefs::{cull, stars, Shown};
use crate::state::AppState;

fn focus(id: &str) {
    use wasm_bindgen::JsCast;
    if let Some(el) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id(id))
        .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
    {
        let _ = el.focus();
    }
}

/// Whether a key press is typing into a field (then only Enter and Escape act).
fn typing(e: &web_sys::KeyboardEvent) -> bool {
    use wasm_bindgen::JsCast;
    e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()).is_some_and(|el| {
        let tag = el.tag_name().to_ascii_lowercase();
        tag == "input" || tag == "textarea" || tag == "select"
    })
}

/// The review of `list` at `index` (`None`: closed). `items` is the store of record the
/// verdicts are written into.
#[component]
pub fn Review(
    list: Memo<Vec<Shown>>,
    index: RwSignal<Option<usize>>,
    items: RwSignal<Vec<Shown>>,
) -> impl IntoView {
    let state = expect_context::<AppState>();
    let current = move || index.get().and_then(|i| list.with(|l| l.get(i).cloned()));
    let reason = RwSignal::new(String::new());
    let note = RwSignal::new(String::new());
    // The fields follow the image shown.
    Effect::new(move |_| {
        if let Some(s) = current() {
            reason.set(s.entry.culling.reason.clone());
            note.set(s.entry.culling.note.clone());
        }
    });
    let change = move |f: &dyn Fn(&mut Culling)| {
        let Some(s) = index.get_untracked().and_then(|i| list.with_untracked(|l| l.get(i).cloned())) else {
            return;
        };
        let mut culling = s.entry.culling.clone();
        f(&mut culling);
        if culling != s.entry.culling {
            cull(state, items, s.entry.key, culling);
        }
    };
    let step = move |by: isize| {
        let n = list.with_untracked(Vec::len) as isize;
        if let Some(i) = index.get_untracked() {
            if n > 0 {
                index.set(Some((i as isize + by).clamp(0, n - 1) as usize));
            }
        }
    };
    let rate = move |r: u8| change(&|c: &mut Culling| c.rating = r);
    let keep = move || {
        change(&|c: &mut Culling| {
            c.verdict = Verdict::Keep;
        })
    };
    let reject = move || {
        let why = reason.get_untracked().trim().to_string();
        change(&|c: &mut Culling| {
            c.verdict = Verdict::Reject;
            c.reason = why.clone();
            c.is_final = false;
        })
    };
    let toggle_final = move || {
        change(&|c: &mut Culling| {
            c.is_final = !c.is_final;
            if c.is_final {
                c.verdict = Verdict::Keep;
            }
        })
    };
    let finish_status = RwSignal::new(None::<String>);
    let finish = move || {
        if let Some(s) = index.get_untracked().and_then(|i| list.with_untracked(|l| l.get(i).cloned())) {
            if s.entry.is_draft() {
                crate::briefs::finish_drafts(state, vec![s.entry], finish_status);
            }
        }
    };
    let upscale = move || {
        if let Some(s) = index.get_untracked().and_then(|i| list.with_untracked(|l| l.get(i).cloned())) {
            crate::upscaling::upscale(state, s.entry.png.clone(), Some(&s.entry));
        }
    };
    let save_note = move || {
        let text = note.get_untracked().trim().to_string();
        change(&|c: &mut Culling| c.note = text.clone())
    };
    let handle = window_event_listener(ev::keydown, move |e: web_sys::KeyboardEvent| {
        if index.get_untracked().is_none() {
            return;
        }
        let key = e.key();
        if typing(&e) {
            match key.as_str() {
                "Escape" => {
                    e.prevent_default();
                    focus("review-image");
                }
                "Enter" => {
                    e.prevent_default();
                    let id = e
                        .target()
                        .and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::Element>(t).ok())
                        .map(|el| el.id())
                        .unwrap_or_default();
                    if id == "review-reason" {
                        reject();
                    } else if id == "review-note" {
                        save_note();
                    }
                    focus("review-image");
                }
                _ => {}
            }
            return;
        }
        if e.ctrl_key() || e.meta_key() || e.alt_key() {
            return;
        }
        let handled = match key.as_str() {
            "ArrowRight" => {
                step(1);
                true
            }
            "ArrowLeft" => {
                step(-1);
                true
            }
            "0" | "1" | "2" | "3" | "4" | "5" => {
                rate(key.parse().unwrap_or(0));
                true
            }
            "k" | "K" => {
                keep();
                true
            }
            "x" | "X" => {
                focus("review-reason");
                true
            }
            "f" | "F" => {
                toggle_final();
                true
            }
            "n" | "N" => {
                focus("review-note");
                true
            }
            "d" | "D" => {
                finish();
                true
            }
            "u" | "U" => {
                upscale();
                true
            }
            "Escape" => {
                index.set(None);
                true
            }
            _ => false,
        };
        if handled {
            e.prevent_default();
        }
    });
    on_cleanup(move || handle.remove());
    let position =
        move || index.get().map(|i| format!("{} of {}", i + 1, list.with(Vec::len))).unwrap_or_default();
    view! {
        {move || current().map(|s| {
            let c = s.entry.culling.clone();
            let verdict = match (c.is_final, c.verdict) {
                (true, _) => "final",
                (false, Verdict::Keep) => "kept",
                (false, Verdict::Reject) => "rejected",
                (false, Verdict::Undecided) => "undecided",
            };
            let scores = ordered_scores(&s.entry.scores)
                .into_iter()
                .map(|(k, v)| view! { <span class="score" data-score=k.to_string()>{format!("{} {}", score_label(k).0, score_text(k, v))}</span> })
                .collect_view();
            let settings = s.entry.infotext.rsplit_once("\nSteps: ").map(|(_, t)| format!("Steps: {t}")).unwrap_or_default();
            view! {
                <div class="review" id="review" role="dialog" aria-label="Review" data-key=s.entry.key data-verdict=verdict>
                    <div class="review-image">
                        <img id="review-image" tabindex="0" src=s.url.clone() alt=s.entry.prompt().to_string() />
                    </div>
                    <aside class="review-side">
                        <div class="review-head">
                            <span class="muted small" id="review-position">{position}</span>
                            <button id="review-close" on:click=move |_| index.set(None) title="Esc">"Close"</button>
                        </div>
                        <p class="stars" id="review-stars" aria-label=format!("{} of 5 stars", c.rating)>{if c.rating == 0 { "unrated".to_string() } else { stars(c.rating) }}</p>
                        <p class=format!("badge {verdict}") id="review-verdict">{verdict}</p>
                        <div class="actions">
                            {(1..=5u8).map(|r| view! { <button class="rate" data-rating=r on:click=move |_| rate(r) title=format!("{r} (key {r})")>{r.to_string()}</button> }).collect_view()}
                        </div>
                        <div class="actions">
                            <button id="review-keep" on:click=move |_| keep() title="K">"Keep (K)"</button>
                            <button id="review-final" on:click=move |_| toggle_final() title="F">{if c.is_final { "Not final (F)" } else { "Final (F)" }}</button>
                            <button id="review-upscale" on:click=move |_| upscale() title="U: upscale with the chosen upscaler (the result joins the gallery)">"Upscale (U)"</button>
                        </div>
                        {s.entry.is_draft().then(|| view! {
                            <div class="actions">
                                <span class="badge draft">"draft"</span>
                                <button id="review-finish" on:click=move |_| finish() title="D: decode its kept latents with the full VAE">"Finish (D)"</button>
                            </div>
                        })}
                        {move || finish_status.get().map(|t| view! { <p class="small" id="review-finish-status" role="status">{t}</p> })}
                        <label class="field">
                            <span>"Reject because… (X, then Enter)"</span>
                            <input id="review-reason" type="text" placeholder="off palette, wrong crop…"
                                prop:value=move || reason.get() on:input=move |ev| reason.set(event_target_value(&ev)) />
                        </label>
                        <button id="review-reject" class="danger" on:click=move |_| reject()>"Reject"</button>
                        <label class="field">
                            <span>"Note (N, then Enter)"</span>
                            <input id="review-note" type="text" prop:value=move || note.get()
                                on:input=move |ev| note.set(event_target_value(&ev)) on:change=move |_| save_note() />
                        </label>
                        <p class="prompt">{s.entry.prompt().to_string()}</p>
                        <p class="scores small">{scores}</p>
                        <p class="muted small settings">{settings}</p>
                        <p class="muted small">"← → move · 1–5 stars · 0 clears · K keep · X reject · F final · N note · D finish a draft · U upscale · Esc close"</p>
                    </aside>
                </div>
            }
        })}
    }
}
