//! The Models tab's LoRA section: import a LoRA file from disk into this browser, list what is
//! stored with the tag that uses each, add a tag to the prompt, delete.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::loras::StoredLora;
use crate::protocol::{StoreOp, StoreReply};
use crate::state::{human_bytes, AppState, Tab};

/// Reads the list of stored LoRAs into the state.
pub fn refresh_loras(state: AppState) {
    spawn_local(async move {
        if let Ok(list) = crate::loras::list().await {
            state.loras.set(list);
        }
    });
}

/// The file a file input's change event picked.
pub fn picked_file(ev: &leptos::ev::Event) -> Option<web_sys::File> {
    use wasm_bindgen::JsCast;
    let input: web_sys::HtmlInputElement = ev.target()?.dyn_into().ok()?;
    input.files()?.get(0)
}

/// The tag that applies `name` at weight 1.
fn tag(name: &str) -> String {
    format!("<lora:{name}:1>")
}

/// Appends `name`'s tag to the prompt unless the prompt already names it, and shows the prompt.
pub fn add_to_prompt(state: AppState, name: &str) {
    let prompt = state.settings.prompt.get_untracked();
    let present = darkroom_pipeline::prompt::extract_loras(&prompt).1.iter().any(|t| t.name == name);
    if !present {
        let sep = if prompt.is_empty() || prompt.ends_with(' ') { "" } else { " " };
        state.settings.prompt.set(format!("{prompt}{sep}{}", tag(name)));
    }
    state.tab.set(Tab::Generate);
}

#[component]
fn LoraRow(lora: StoredLora) -> impl IntoView {
    let state = expect_context::<AppState>();
    let name = lora.name.clone();
    let for_add = lora.name.clone();
    let for_delete = lora.name.clone();
    let remove = move |_| {
        let name = for_delete.clone();
        let Some(worker) = state.worker.get_value() else { return };
        worker.store_then(StoreOp::DeleteLora { name }, Vec::new(), move |outcome| {
            if let Err(e) = outcome {
                state.error.set(Some(e));
            }
            refresh_loras(state);
        });
    };
    view! {
        <li class="lora" data-lora=name.clone()>
            <strong>{name.clone()}</strong>
            <span class="muted">" · " {human_bytes(lora.bytes)} " · "</span>
            <code>{tag(&name)}</code>
            <span class="actions">
                <button class="add-lora" on:click=move |_| add_to_prompt(state, &for_add)>"Add to prompt"</button>
                <button class="delete" on:click=remove>"Delete"</button>
            </span>
        </li>
    }
}

#[component]
pub fn LoraManager() -> impl IntoView {
    let state = expect_context::<AppState>();
    let file = StoredValue::new_local(None::<web_sys::File>);
    let name = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let outcome = RwSignal::new(None::<Result<String, String>>);
    let pick = move |ev: leptos::ev::Event| {
        let chosen = picked_file(&ev);
        if let Some(f) = &chosen {
            name.set(darkroom_weights::lora::name_from_file(&f.name()));
        }
        file.set_value(chosen);
        outcome.set(None);
    };
    let start = move |_| {
        let Some(f) = file.get_value() else {
            outcome.set(Some(Err("Pick a LoRA .safetensors file first.".into())));
            return;
        };
        let chosen = name.get_untracked();
        if let Err(e) = darkroom_weights::lora::check_name(&chosen) {
            outcome.set(Some(Err(e)));
            return;
        }
        if state.loras.get_untracked().iter().any(|l| l.name == chosen) {
            outcome.set(Some(Err(format!(
                "A LoRA called {chosen} is here already: delete it first, or pick another name."
            ))));
            return;
        }
        let Some(worker) = state.worker.get_value() else {
            outcome.set(Some(Err("The worker that stores files is not running.".into())));
            return;
        };
        busy.set(true);
        outcome.set(None);
        let op = StoreOp::ImportLora { name: chosen.clone() };
        worker.store_then(op, vec![f.into()], move |result| {
            busy.set(false);
            outcome.set(Some(result.map(|reply| {
                let layers = match reply {
                    StoreReply::LoraImported { layers } => layers,
                    _ => 0,
                };
                format!("{chosen} is ready ({layers} layers): use {} in a prompt.", tag(&chosen))
            })));
            refresh_loras(state);
        });
    };
    view! {
        <div class="import loras" id="loras">
            <h3>"LoRAs"</h3>
            <p class="muted small">
                "LoRA files (.safetensors in kohya's or diffusers' layout, for SD 1.x, 2.x and SDXL) change a model's style or subject. "
                "Write " <code>"<lora:name:weight>"</code> " in the prompt to apply one; the model is reloaded with it merged in. Nothing is uploaded."
            </p>
            <Show when=move || !state.loras.get().is_empty()
                fallback=|| view! { <p class="muted small" id="no-loras">"No LoRAs in this browser yet."</p> }>
                <ul class="lora-list">
                    <For each=move || state.loras.get() key=|l| (l.name.clone(), l.bytes)
                        children=move |lora| view! { <LoraRow lora=lora /> } />
                </ul>
            </Show>
            <div class="row">
                <label class="field">
                    <span>"LoRA file"</span>
                    <input id="lora-file" type="file" accept=".safetensors" on:change=pick />
                </label>
                <label class="field">
                    <span>"Name in prompts"</span>
                    <input id="lora-name" type="text" prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
                </label>
                <button id="lora-import" class="primary" disabled=move || busy.get() on:click=start>
                    {move || if busy.get() { "Importing…" } else { "Import" }}
                </button>
            </div>
            {move || outcome.get().map(|r| match r {
                Ok(text) => view! { <p class="ok" id="lora-result">{text}</p> }.into_any(),
                Err(e) => view! { <p class="error" id="lora-result" role="alert">{e}</p> }.into_any(),
            })}
        </div>
    }
}
