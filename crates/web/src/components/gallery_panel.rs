use darkroom_pipeline::metadata::GenerationParams;
use leptos::prelude::*;

use crate::briefs::{gallery_images, stars};
use crate::components::review::Review;
use crate::gallery::matches;
use crate::protocol::StoreOp;
use crate::state::{AppState, Tab};

/// Every image made on this device, newest first: search, review and cull at full size, put
/// into a brief, use the settings, download, delete.
#[component]
pub fn GalleryPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let items = gallery_images(state, crate::state::Tab::Gallery);
    let query = RwSignal::new(String::new());
    let failure = RwSignal::new(None::<String>);
    let shown = Memo::new(move |_| {
        let q = query.get();
        items.get().into_iter().filter(|s| matches(&s.entry, &q)).collect::<Vec<_>>()
    });
    let review = RwSignal::new(None::<usize>);
    view! {
        <section class="panel" id="gallery">
            <h2>"Gallery"</h2>
            <p class="muted">"Every image you make is kept in this browser, with its settings. Nothing is uploaded."</p>
            <input id="gallery-search" type="search" placeholder="Search prompts and settings"
                prop:value=move || query.get() on:input=move |ev| query.set(event_target_value(&ev)) />
            <crate::upscaling::UpscalerPicker />
            {move || failure.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <p class="muted small" id="gallery-count">{move || format!("{} of {} images · click one to review it at full size", shown.with(Vec::len), items.with(Vec::len))}</p>
            <div class="gallery-grid">
                <For
                    each=move || shown.get().into_iter().enumerate()
                    key=|(i, s)| (*i, s.entry.key, s.url.clone(), s.entry.culling.clone(), s.entry.brief.clone())
                    children=move |(position, item)| {
                        let entry = item.entry.clone();
                        let key = entry.key;
                        let verdict = match (entry.culling.is_final, entry.culling.verdict) {
                            (true, _) => "final",
                            (false, darkroom_workflow::brief::Verdict::Keep) => "kept",
                            (false, darkroom_workflow::brief::Verdict::Reject) => "rejected",
                            (false, darkroom_workflow::brief::Verdict::Undecided) => "",
                        };
                        let in_brief = entry.brief.clone();
                        let brief_name = move || in_brief.as_ref().and_then(|id| state.briefs.with(|l| l.iter().find(|b| &b.id == id).map(|b| b.title.clone())));
                        let assign = move |ev: leptos::ev::Event| {
                            let target = event_target_value(&ev);
                            let Some(worker) = state.worker.get_value() else { return };
                            let brief = (!target.is_empty()).then_some(target);
                            let op = StoreOp::AssignBrief { keys: vec![key], brief, iteration: js_sys::Date::now() };
                            worker.store_then(op, Vec::new(), move |outcome| {
                                if let Err(e) = outcome {
                                    failure.set(Some(e));
                                }
                                state.gallery_version.update(|v| *v += 1);
                            });
                        };
                        let infotext = entry.infotext.clone();
                        let use_settings = move |_| {
                            match GenerationParams::parse_infotext(&infotext) {
                                Ok(params) => {
                                    state.settings.restore(&params, &state.models.get_untracked());
                                    state.tab.set(Tab::Generate);
                                }
                                Err(e) => state.error.set(Some(format!("This image's settings cannot be read: {e}"))),
                            }
                        };
                        let delete = move |_| {
                            let Some(worker) = state.worker.get_value() else { return };
                            worker.store_then(StoreOp::DeleteImage { key }, Vec::new(), move |outcome| {
                                if let Err(e) = outcome {
                                    failure.set(Some(e));
                                }
                                state.gallery_version.update(|v| *v += 1);
                            });
                        };
                        let when = js_sys::Date::new(&entry.time.into()).to_locale_string("default", &js_sys::Object::new().into());
                        let seed = GenerationParams::parse_infotext(&entry.infotext).map(|p| p.seed).unwrap_or(0);
                        view! {
                            <figure class="gallery-item" data-key=key data-verdict=verdict>
                                <button class="thumb" title="Review at full size" on:click=move |_| review.set(Some(position))>
                                    <img src=item.url.clone() alt=entry.prompt().to_string() />
                                </button>
                                <figcaption>
                                    <p class="prompt">{entry.prompt().to_string()}</p>
                                    <p class="small">
                                        <span class="stars">{stars(entry.culling.rating)}</span>" "
                                        <span class=format!("badge {verdict}")>{verdict}</span>
                                        {entry.is_draft().then(|| view! { <span class="badge draft" title="TAESD's quick decode: review it and press D to finish it">"draft"</span> })}
                                        {move || brief_name().map(|t| view! { <span class="muted">" · in "{t}</span> })}
                                    </p>
                                    <p class="muted small">{format!("{} · {}×{} · {}", entry.model, entry.width, entry.height, String::from(when))}</p>
                                    <div class="actions">
                                        <button class="use-settings" on:click=use_settings>"Use these settings"</button>
                                        {crate::upscaling::button(state, entry.png.clone(), Some(entry.clone()))}
                                        <a class="download" href=item.url.clone() download=format!("darkroom-{seed}.png")>"Download PNG"</a>
                                        <button class="delete" on:click=delete>"Delete"</button>
                                        {move || (!state.briefs.with(Vec::is_empty)).then(|| view! {
                                            <select class="assign-brief" aria-label="Brief" on:change=assign>
                                                <option value="">"No brief"</option>
                                                {state.briefs.get().into_iter().map(|b| {
                                                    let selected = entry.brief.as_deref() == Some(b.id.as_str());
                                                    view! { <option value=b.id.clone() selected=selected>{format!("Brief: {}", b.title)}</option> }
                                                }).collect_view()}
                                            </select>
                                        })}
                                    </div>
                                </figcaption>
                            </figure>
                        }
                    }
                />
            </div>
            <Review list=shown index=review items=items />
        </section>
    }
}
