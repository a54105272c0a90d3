use darkroom_pipeline::metadata::GenerationParams;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::gallery::{matches, Entry, Gallery};
use crate::protocol::StoreOp;
use crate::state::{png_url, AppState, Tab};

/// A stored image with the object URL that shows it.
#[derive(Clone, PartialEq)]
struct Shown {
    entry: Entry,
    url: String,
}

/// Every image made on this device, newest first: search, use the settings, download, delete.
#[component]
pub fn GalleryPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let items = RwSignal::new(Vec::<Shown>::new());
    let query = RwSignal::new(String::new());
    let failure = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        state.gallery_version.track();
        spawn_local(async move {
            match async { Gallery::open().await?.all().await }.await {
                Ok(entries) => {
                    for old in items.get_untracked() {
                        let _ = web_sys::Url::revoke_object_url(&old.url);
                    }
                    items.set(
                        entries.into_iter().map(|entry| Shown { url: png_url(&entry.png), entry }).collect(),
                    );
                }
                Err(e) => failure.set(Some(e)),
            }
        });
    });
    let shown = move || {
        let q = query.get();
        items.get().into_iter().filter(|s| matches(&s.entry, &q)).collect::<Vec<_>>()
    };
    view! {
        <section class="panel" id="gallery">
            <h2>"Gallery"</h2>
            <p class="muted">"Every image you make is kept in this browser, with its settings. Nothing is uploaded."</p>
            <input id="gallery-search" type="search" placeholder="Search prompts and settings"
                prop:value=move || query.get() on:input=move |ev| query.set(event_target_value(&ev)) />
            {move || failure.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <p class="muted small" id="gallery-count">{move || format!("{} of {} images", shown().len(), items.get().len())}</p>
            <div class="gallery-grid">
                <For
                    each=shown
                    key=|s| s.entry.key
                    children=move |item| {
                        let entry = item.entry.clone();
                        let key = entry.key;
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
                            <figure class="gallery-item" data-key=key>
                                <img src=item.url.clone() alt=entry.prompt().to_string() />
                                <figcaption>
                                    <p class="prompt">{entry.prompt().to_string()}</p>
                                    <p class="muted small">{format!("{} · {}×{} · {}", entry.model, entry.width, entry.height, String::from(when))}</p>
                                    <div class="actions">
                                        <button class="use-settings" on:click=use_settings>"Use these settings"</button>
                                        <a class="download" href=item.url.clone() download=format!("darkroom-{seed}.png")>"Download PNG"</a>
                                        <button class="delete" on:click=delete>"Delete"</button>
                                    </div>
                                </figcaption>
                            </figure>
                        }
                    }
                />
            </div>
        </section>
    }
}
