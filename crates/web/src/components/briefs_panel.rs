//! Briefs: the list, a new or imported brief, the brief's text and constraints, which brief new
//! images join, and its board.

use darkroom_workflow::brief::{parse_hex, Brief, Constraints};
use leptos::prelude::*;

use crate::briefs::{gallery_images, Shown};
use crate::components::brief_board::BriefBoard;
use crate::components::lora_manager::picked_file;
use crate::protocol::{StoreOp, StoreReply};
use crate::state::AppState;

fn list_text(items: &[String]) -> String {
    items.join(", ")
}

fn text_list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

fn new_id() -> String {
    format!("brief-{}-{:06}", js_sys::Date::now() as u64, (js_sys::Math::random() * 1e6) as u32)
}

/// The brief's text and constraints, edited and saved as a whole.
#[component]
fn BriefEditor(brief: Brief) -> impl IntoView {
    let state = expect_context::<AppState>();
    let c = brief.constraints.clone();
    let title = RwSignal::new(brief.title.clone());
    let text = RwSignal::new(brief.text.clone());
    let palette = RwSignal::new(list_text(&c.palette));
    let aspects = RwSignal::new(list_text(&c.aspect_ratios));
    let deadline = RwSignal::new(c.deadline.clone());
    let consistency = RwSignal::new(c.consistency.clone());
    let styles = RwSignal::new(list_text(&c.styles));
    let outcome = RwSignal::new(None::<Result<String, String>>);
    let original = StoredValue::new(brief);
    let save = move |_| {
        let colours = text_list(&palette.get_untracked());
        if let Some(bad) = colours.iter().find(|c| parse_hex(c).is_none()) {
            outcome.set(Some(Err(format!(
                "{bad} is not a colour: write colours as #rrggbb, separated by commas."
            ))));
            return;
        }
        let mut b = original.get_value();
        b.title = title.get_untracked().trim().to_string();
        b.text = text.get_untracked();
        b.constraints = Constraints {
            palette: colours,
            aspect_ratios: text_list(&aspects.get_untracked()),
            deadline: deadline.get_untracked().trim().to_string(),
            consistency: consistency.get_untracked().trim().to_string(),
            styles: text_list(&styles.get_untracked()),
        };
        let Some(worker) = state.worker.get_value() else { return };
        worker.store_then(StoreOp::SaveBrief { brief: b }, Vec::new(), move |result| {
            outcome.set(Some(result.map(|_| "Saved.".to_string())));
            state.reload_briefs();
        });
    };
    let field =
        |label: &'static str, id: &'static str, value: RwSignal<String>, placeholder: &'static str| {
            view! {
                <label class="field">
                    <span>{label}</span>
                    <input id=id type="text" placeholder=placeholder prop:value=move || value.get()
                        on:input=move |ev| value.set(event_target_value(&ev)) />
                </label>
            }
        };
    view! {
        <div class="brief-editor">
            <label class="field">
                <span>"Title"</span>
                <input id="brief-title" type="text" prop:value=move || title.get() on:input=move |ev| title.set(event_target_value(&ev)) />
            </label>
            <label class="field">
                <span>"The brief"</span>
                <textarea id="brief-text" rows="4" placeholder="What the client asked for, in their words."
                    prop:value=move || text.get() on:input=move |ev| text.set(event_target_value(&ev))></textarea>
            </label>
            <div class="row">
                {field("Palette (#rrggbb, …)", "brief-palette", palette, "#0b1f3a, #f2efe9")}
                {field("Formats", "brief-aspects", aspects, "16:9, 1:1")}
                <label class="field narrow">
                    <span>"Deadline"</span>
                    <input id="brief-deadline" type="date" prop:value=move || deadline.get() on:input=move |ev| deadline.set(event_target_value(&ev)) />
                </label>
            </div>
            <div class="row">
                {field("Keep consistent", "brief-consistency", consistency, "the same character, lighting…")}
                {field("Styles / presets", "brief-styles", styles, "Cinematic, Brand look")}
            </div>
            <div class="actions">
                <button id="brief-save" class="primary" on:click=save>"Save brief"</button>
                <span class="swatches">{move || text_list(&palette.get()).into_iter().filter_map(|c| parse_hex(&c).map(|rgb| {
                    let css = format!("rgb({}, {}, {})", rgb[0], rgb[1], rgb[2]);
                    view! { <i class="swatch" style:background=css title=c></i> }
                })).collect_view()}</span>
                {move || outcome.get().map(|r| match r {
                    Ok(t) => view! { <span class="ok" id="brief-saved">{t}</span> }.into_any(),
                    Err(e) => view! { <span class="error" role="alert">{e}</span> }.into_any(),
                })}
            </div>
        </div>
    }
}

#[component]
pub fn BriefsPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    state.reload_briefs();
    let items: RwSignal<Vec<Shown>> = gallery_images(state, crate::state::Tab::Briefs);
    let open = RwSignal::new(None::<String>);
    let message = RwSignal::new(None::<Result<String, String>>);
    // The active brief opens first.
    Effect::new(move |_| {
        if open.get_untracked().is_none() {
            if let Some(id) = state.active_brief.get() {
                if state.briefs.with(|l| l.iter().any(|b| b.id == id)) {
                    open.set(Some(id));
                }
            }
        }
    });
    let opened = Memo::new(move |_| {
        let id = open.get()?;
        state.briefs.with(|l| l.iter().find(|b| b.id == id).cloned())
    });
    // The editor is rebuilt only when another brief opens, not when the list reloads after a save
    // (that would drop what is being typed and the save's outcome).
    let shown_id = Memo::new(move |_| opened.with(|b| b.as_ref().map(|b| b.id.clone())));
    let create = move |_| {
        let brief = Brief {
            id: new_id(),
            title: "Untitled brief".into(),
            created: js_sys::Date::now(),
            ..Default::default()
        };
        let id = brief.id.clone();
        let Some(worker) = state.worker.get_value() else { return };
        worker.store_then(StoreOp::SaveBrief { brief }, Vec::new(), move |result| match result {
            Ok(_) => {
                state.reload_briefs();
                state.set_active_brief(Some(id.clone()));
                open.set(Some(id));
            }
            Err(e) => message.set(Some(Err(e))),
        });
    };
    let import = move |ev: leptos::ev::Event| {
        let Some(file) = picked_file(&ev) else { return };
        let Some(worker) = state.worker.get_value() else { return };
        message.set(Some(Ok(format!("Importing {}…", file.name()))));
        worker.store_then(StoreOp::ImportBrief, vec![file.into()], move |result| match result {
            Ok(StoreReply::BriefImported { id, images }) => {
                message.set(Some(Ok(format!("Imported the brief with {images} images."))));
                state.reload_briefs();
                state.gallery_version.update(|v| *v += 1);
                open.set(Some(id));
            }
            Ok(_) => {}
            Err(e) => message.set(Some(Err(e))),
        });
    };
    let delete = move |_| {
        let Some(id) = open.get_untracked() else { return };
        let confirmed = web_sys::window()
            .and_then(|w| w.confirm_with_message("Delete this brief? Its images stay in the gallery.").ok())
            .unwrap_or(false);
        if !confirmed {
            return;
        }
        let Some(worker) = state.worker.get_value() else { return };
        worker.store_then(StoreOp::DeleteBrief { id: id.clone() }, Vec::new(), move |result| match result {
            Ok(_) => {
                if state.active_brief.get_untracked().as_deref() == Some(id.as_str()) {
                    state.set_active_brief(None);
                }
                open.set(None);
                state.reload_briefs();
                state.gallery_version.update(|v| *v += 1);
            }
            Err(e) => message.set(Some(Err(e))),
        });
    };
    let count =
        move |id: &str| items.with(|l| l.iter().filter(|s| s.entry.brief.as_deref() == Some(id)).count());
    view! {
        <section class="panel" id="briefs">
            <h2>"Briefs"</h2>
            <p class="muted">"A brief is a project: the client's words, the constraints, and every iteration made for it — kept, rejected with a reason, final. It stays in this browser; export it as one file, or as a case study to show."</p>
            <div class="actions">
                <button id="brief-new" class="primary" on:click=create>"New brief"</button>
                <label class="file-pick button-like">"Import a brief file…"
                    <input id="brief-import" type="file" accept=".zip,application/zip" on:change=import />
                </label>
            </div>
            {move || message.get().map(|m| match m {
                Ok(t) => view! { <p class="ok" id="brief-message" role="status">{t}</p> }.into_any(),
                Err(e) => view! { <p class="error" id="brief-message" role="alert">{e}</p> }.into_any(),
            })}
            <ul class="brief-list" id="brief-list">
                {move || state.briefs.get().into_iter().map(|b| {
                    let id = b.id.clone();
                    let is_open = { let id = id.clone(); move || open.get().as_deref() == Some(id.as_str()) };
                    let is_active = { let id = id.clone(); move || state.active_brief.get().as_deref() == Some(id.as_str()) };
                    let title = if b.title.trim().is_empty() { "Untitled brief".to_string() } else { b.title.clone() };
                    let n = count(&id);
                    let pick = { let id = id.clone(); move |_| open.set(Some(id.clone())) };
                    view! {
                        <li class="brief-item" class:open=is_open data-id=id.clone()>
                            <button class="brief-open" on:click=pick>{title}</button>
                            <span class="muted small">{format!("{n} images")}</span>
                            {move || is_active().then(|| view! { <span class="badge kept">"active"</span> })}
                        </li>
                    }
                }).collect_view()}
            </ul>
            {move || shown_id.get().and_then(|id| opened.get_untracked().map(|b| (id, b))).map(|(id, b)| {
                let active = { let id = id.clone(); move || state.active_brief.get().as_deref() == Some(id.as_str()) };
                let toggle = { let id = id.clone(); move |_| {
                    let now = state.active_brief.get_untracked().as_deref() == Some(id.as_str());
                    state.set_active_brief((!now).then(|| id.clone()));
                }};
                view! {
                    <div class="brief" data-id=id.clone()>
                        <BriefEditor brief=b />
                        <div class="actions">
                            <button id="brief-activate" on:click=toggle>
                                {move || if active() { "New images join this brief ✓" } else { "Make new images join this brief" }}
                            </button>
                            <button id="brief-delete" class="danger" on:click=delete>"Delete brief"</button>
                        </div>
                        <BriefBoard brief=opened items=items />
                    </div>
                }
            })}
        </section>
    }
}
