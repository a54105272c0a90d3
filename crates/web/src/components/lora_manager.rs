//! The Models tab's LoRA and embedding sections: import a LoRA or a textual-inversion embedding
//! from disk into this browser, list what is stored with what a prompt writes to use each, add
//! that to the prompt (an embedding also to the negative prompt), delete.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::loras::StoredFile;
use crate::protocol::{StoreOp, StoreReply};
use crate::state::{human_bytes, AppState, Tab};

/// Reads the lists of stored LoRAs and embeddings into the state.
pub fn refresh_loras(state: AppState) {
    spawn_local(async move {
        if let Ok(list) = crate::loras::list().await {
            state.loras.set(list);
        }
        if let Ok(list) = crate::embeddings::list().await {
            state.embeddings.set(list);
        }
    });
}

/// What a section manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOn {
    Lora,
    Embedding,
}

impl AddOn {
    /// Element ids and classes: `lora-file`, `embedding-file`, …
    fn id(self) -> &'static str {
        match self {
            AddOn::Lora => "lora",
            AddOn::Embedding => "embedding",
        }
    }

    fn list(self, state: AppState) -> RwSignal<Vec<StoredFile>> {
        match self {
            AddOn::Lora => state.loras,
            AddOn::Embedding => state.embeddings,
        }
    }

    /// What a prompt writes to use `name`.
    fn tag(self, name: &str) -> String {
        match self {
            AddOn::Lora => tag(name),
            AddOn::Embedding => name.to_string(),
        }
    }

    fn name_from_file(self, file: &str) -> String {
        match self {
            AddOn::Lora => darkroom_weights::lora::name_from_file(file),
            AddOn::Embedding => darkroom_weights::embedding::name_from_file(file),
        }
    }

    fn import(self, name: String) -> StoreOp {
        match self {
            AddOn::Lora => StoreOp::ImportLora { name },
            AddOn::Embedding => StoreOp::ImportEmbedding { name },
        }
    }

    fn delete(self, name: String) -> StoreOp {
        match self {
            AddOn::Lora => StoreOp::DeleteLora { name },
            AddOn::Embedding => StoreOp::DeleteEmbedding { name },
        }
    }
}

/// Appends embedding `name` to the prompt or the negative prompt unless it is there, and shows
/// the Generate tab.
fn add_word(state: AppState, name: &str, negative: bool) {
    let field = if negative { state.settings.negative } else { state.settings.prompt };
    let text = field.get_untracked();
    if !text.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_')).any(|w| w == name) {
        let sep = if text.trim().is_empty() { "" } else { ", " };
        field.set(format!("{}{sep}{name}", text.trim_end()));
    }
    state.tab.set(Tab::Generate);
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
fn AddOnRow(kind: AddOn, item: StoredFile) -> impl IntoView {
    let state = expect_context::<AppState>();
    let name = item.name.clone();
    let (for_add, for_negative, for_delete) = (name.clone(), name.clone(), name.clone());
    let remove = move |_| {
        let Some(worker) = state.worker.get_value() else { return };
        worker.store_then(kind.delete(for_delete.clone()), Vec::new(), move |outcome| {
            if let Err(e) = outcome {
                state.error.set(Some(e));
            }
            refresh_loras(state);
        });
    };
    let add = move |_| match kind {
        AddOn::Lora => add_to_prompt(state, &for_add),
        AddOn::Embedding => add_word(state, &for_add, false),
    };
    let negative = (kind == AddOn::Embedding).then(|| {
        view! { <button class="add-negative" on:click=move |_| add_word(state, &for_negative, true)>"Add to negative"</button> }
    });
    view! {
        <li class=format!("lora {}", kind.id()) data-lora=(kind == AddOn::Lora).then(|| name.clone())
            data-embedding=(kind == AddOn::Embedding).then(|| name.clone())>
            <strong>{name.clone()}</strong>
            <span class="muted">" · " {human_bytes(item.bytes)} " · "</span>
            <code>{kind.tag(&name)}</code>
            <span class="actions">
                <button class=format!("add-{}", kind.id()) on:click=add>"Add to prompt"</button>
                {negative}
                <button class="delete" on:click=remove>"Delete"</button>
            </span>
        </li>
    }
}

/// One section of the Models tab: LoRAs or embeddings.
#[component]
pub fn AddOnManager(kind: AddOn) -> impl IntoView {
    let state = expect_context::<AppState>();
    let file = StoredValue::new_local(None::<web_sys::File>);
    let name = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let outcome = RwSignal::new(None::<Result<String, String>>);
    let id = kind.id();
    let pick = move |ev: leptos::ev::Event| {
        let chosen = picked_file(&ev);
        if let Some(f) = &chosen {
            name.set(kind.name_from_file(&f.name()));
        }
        file.set_value(chosen);
        outcome.set(None);
    };
    let start = move |_| {
        let Some(f) = file.get_value() else {
            let what = match kind {
                AddOn::Lora => "Pick a LoRA .safetensors file first.",
                AddOn::Embedding => "Pick an embedding (.safetensors or .pt) first.",
            };
            outcome.set(Some(Err(what.into())));
            return;
        };
        let chosen = name.get_untracked();
        if let Err(e) = darkroom_weights::lora::check_name(&chosen) {
            outcome.set(Some(Err(e)));
            return;
        }
        if kind.list(state).get_untracked().iter().any(|l| l.name == chosen) {
            outcome
                .set(Some(Err(format!("{chosen} is here already: delete it first, or pick another name."))));
            return;
        }
        let Some(worker) = state.worker.get_value() else {
            outcome.set(Some(Err("The worker that stores files is not running.".into())));
            return;
        };
        busy.set(true);
        outcome.set(None);
        worker.store_then(kind.import(chosen.clone()), vec![f.into()], move |result| {
            busy.set(false);
            outcome.set(Some(result.map(|reply| match reply {
                StoreReply::LoraImported { layers } => {
                    format!("{chosen} is ready ({layers} layers): use {} in a prompt.", tag(&chosen))
                }
                StoreReply::EmbeddingImported { vectors, kind } => format!(
                    "{chosen} is ready ({kind}, {vectors} vectors): write {chosen} in a prompt or negative prompt."
                ),
                _ => format!("{chosen} is ready."),
            })));
            refresh_loras(state);
        });
    };
    let noun = match kind {
        AddOn::Lora => "LoRAs",
        AddOn::Embedding => "embeddings",
    };
    let (title, about, accept, label) = match kind {
        AddOn::Lora => (
            "LoRAs",
            view! { <p class="muted small">
                "LoRA files (.safetensors in kohya's or diffusers' layout, for SD 1.x, 2.x and SDXL) change a model's style or subject. "
                "Write " <code>"<lora:name:weight>"</code> " in the prompt to apply one; the model is reloaded with it merged in. Nothing is uploaded."
            </p> }.into_any(),
            ".safetensors",
            "LoRA file",
        ),
        AddOn::Embedding => (
            "Embeddings",
            view! { <p class="muted small">
                "Textual-inversion embeddings (A1111's .safetensors or .pt, for SD 1.x/2.x or SDXL) are learned words: "
                "write the name in the prompt or the negative prompt (" <code>"(name:1.2)"</code> " weighs it) and its vectors take its place. Nothing is uploaded."
            </p> }.into_any(),
            ".safetensors,.pt",
            "Embedding file",
        ),
    };
    view! {
        <div class=format!("import {id}s") id=format!("{id}s")>
            <h3>{title}</h3>
            {about}
            <Show when=move || !kind.list(state).get().is_empty()
                fallback=move || view! { <p class="muted small" id=format!("no-{id}s")>{format!("No {noun} in this browser yet.")}</p> }>
                <ul class="lora-list">
                    <For each=move || kind.list(state).get() key=|l| (l.name.clone(), l.bytes)
                        children=move |item| view! { <AddOnRow kind=kind item=item /> } />
                </ul>
            </Show>
            <div class="row">
                <label class="field">
                    <span>{label}</span>
                    <input id=format!("{id}-file") type="file" accept=accept on:change=pick />
                </label>
                <label class="field">
                    <span>"Name in prompts"</span>
                    <input id=format!("{id}-name") type="text" prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
                </label>
                <button id=format!("{id}-import") class="primary" disabled=move || busy.get() on:click=start>
                    {move || if busy.get() { "Importing…" } else { "Import" }}
                </button>
            </div>
            {move || outcome.get().map(|r| match r {
                Ok(text) => view! { <p class="ok" id=format!("{id}-result")>{text}</p> }.into_any(),
                Err(e) => view! { <p class="error" id=format!("{id}-result") role="alert">{e}</p> }.into_any(),
            })}
        </div>
    }
}
