//! The Prompts tab: the wildcard files dynamic prompts draw from (`__name__`), the styles
//! (A1111's styles.csv) and brand presets (JSON files) — imported from disk, listed, used,
//! deleted, exported. They stay in this browser (`prompt_library`).

use darkroom_pipeline::preset::{Preset, SeedPolicy};
use darkroom_workflow::styles::Style;
use darkroom_workflow::wildcards::{files_in_zip, name_of_file, text_of_file};
use darkroom_workflow::Styles;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::prompt_library::{self, WildcardFile};
use crate::state::{AppState, Tab};

/// Reads the stored library into the state.
pub fn refresh(state: AppState) {
    spawn_local(async move {
        match prompt_library::load().await {
            Ok(library) => state.prompt_library.set(library),
            Err(e) => state.error.set(Some(format!("The prompt library could not be read: {e}"))),
        }
    });
}

fn files_of(ev: &leptos::ev::Event) -> Vec<web_sys::File> {
    let Some(input) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok()) else {
        return Vec::new();
    };
    let Some(list) = input.files() else { return Vec::new() };
    let files = (0..list.length()).filter_map(|i| list.get(i)).collect();
    // The same files can be picked again.
    input.set_value("");
    files
}

async fn bytes_of(file: &web_sys::File) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(file.array_buffer())
        .await
        .map_err(|_| format!("{} could not be read", file.name()))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// The path a file was picked with: below the picked folder for a folder pick
/// (`webkitRelativePath` without its first part), else its name.
fn path_of(file: &web_sys::File) -> String {
    let relative = js_sys::Reflect::get(file, &"webkitRelativePath".into())
        .ok()
        .and_then(|v| v.as_string())
        .unwrap_or_default();
    match relative.split_once('/') {
        Some((_, inside)) if !inside.is_empty() => inside.to_string(),
        _ => file.name(),
    }
}

/// Wildcard files from picked `.txt` files, zips and folders.
async fn wildcard_files(files: Vec<web_sys::File>) -> Result<(Vec<WildcardFile>, usize), String> {
    let mut out = Vec::new();
    let mut skipped = 0;
    for file in files {
        let name = file.name();
        let bytes = bytes_of(&file).await?;
        if name.to_lowercase().ends_with(".zip") {
            let inside = files_in_zip(&bytes).map_err(|e| format!("{name}: {e}"))?;
            if inside.is_empty() {
                return Err(format!("{name} has no .txt wildcard files"));
            }
            out.extend(inside.into_iter().map(|(name, text)| WildcardFile { name, text }));
        } else if let Some(wildcard) = name_of_file(&path_of(&file)) {
            out.push(WildcardFile { name: wildcard, text: text_of_file(&bytes) });
        } else {
            skipped += 1;
        }
    }
    Ok((out, skipped))
}

fn styles_saved(
    state: AppState,
    styles: Styles,
    status: RwSignal<Option<Result<String, String>>>,
    done: String,
) {
    spawn_local(async move {
        match prompt_library::save_styles(&styles).await {
            Ok(()) => {
                state.prompt_library.update(|l| l.styles = styles);
                status.set(Some(Ok(done)));
            }
            Err(e) => status.set(Some(Err(format!("The styles were not saved: {e}")))),
        }
    });
}

fn message(id: &'static str, m: Option<Result<String, String>>) -> impl IntoView {
    m.map(|m| match m {
        Ok(t) => view! { <p class="ok small" id=id role="status">{t}</p> }.into_any(),
        Err(e) => view! { <p class="error small" id=id role="alert">{e}</p> }.into_any(),
    })
}

#[component]
pub fn PromptsPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    refresh(state);
    let wildcard_status = RwSignal::new(None::<Result<String, String>>);
    let style_status = RwSignal::new(None::<Result<String, String>>);
    let folder_ref = NodeRef::<leptos::html::Input>::new();
    Effect::new(move |_| {
        if let Some(input) = folder_ref.get() {
            // Chromium, Firefox and Safari all pick folders this way.
            let _ = input.set_attribute("webkitdirectory", "");
        }
    });
    let import_wildcards = move |ev: leptos::ev::Event| {
        let files = files_of(&ev);
        if files.is_empty() {
            return;
        }
        wildcard_status.set(Some(Ok("Reading…".into())));
        spawn_local(async move {
            let outcome = async {
                let (files, skipped) = wildcard_files(files).await?;
                if files.is_empty() {
                    return Err("No wildcard files (.txt, .json, .yaml) among those picked.".to_string());
                }
                for f in &files {
                    darkroom_workflow::Wildcards::new().insert_file(&f.name, &f.text)?;
                }
                prompt_library::put_wildcards(&files).await?;
                let names: Vec<String> = files.iter().flat_map(|f| shown_names(&f.collections())).collect();
                let mut text = format!(
                    "Imported {} wildcard file{}: {}",
                    names.len(),
                    plural(names.len()),
                    shorten(&names)
                );
                if skipped > 0 {
                    text.push_str(&format!(" ({skipped} other file{} skipped)", plural(skipped)));
                }
                Ok(text)
            }
            .await;
            wildcard_status.set(Some(outcome));
            refresh(state);
        });
    };
    let delete_wildcard = move |name: String| {
        spawn_local(async move {
            match prompt_library::delete_wildcard(&name).await {
                Ok(()) => wildcard_status.set(Some(Ok(format!("Deleted __{name}__.")))),
                Err(e) => wildcard_status.set(Some(Err(e))),
            }
            refresh(state);
        });
    };
    let use_wildcard = move |name: String| {
        let s = state.settings;
        let mut prompt = s.prompt.get_untracked();
        if !prompt.is_empty() && !prompt.ends_with(' ') {
            prompt.push_str(", ");
        }
        prompt.push_str(&format!("__{name}__"));
        s.prompt.set(prompt);
        if s.dynamic.get_untracked() == darkroom_pipeline::Dynamic::Off {
            s.dynamic.set(darkroom_pipeline::Dynamic::Random);
        }
        state.tab.set(Tab::Generate);
    };
    let import_styles = move |ev: leptos::ev::Event| {
        let Some(file) = files_of(&ev).into_iter().next() else { return };
        spawn_local(async move {
            let parsed = match bytes_of(&file).await {
                Ok(bytes) => Styles::parse_csv(&String::from_utf8_lossy(&bytes))
                    .map_err(|e| format!("{}: {e}", file.name())),
                Err(e) => Err(e),
            };
            match parsed {
                Ok(new) => {
                    let mut styles = state.prompt_library.get_untracked().styles;
                    let n = new.len();
                    for style in new.iter() {
                        styles.insert(style.clone());
                    }
                    styles_saved(
                        state,
                        styles,
                        style_status,
                        format!("Imported {n} style{} from {}.", plural(n), file.name()),
                    );
                }
                Err(e) => style_status.set(Some(Err(e))),
            }
        });
    };
    let export_styles = move |_| {
        let csv = state.prompt_library.get_untracked().styles.to_csv();
        crate::briefs::download(csv.as_bytes(), "text/csv", "styles.csv");
    };
    let new_name = RwSignal::new(String::new());
    let save_style = move |_| {
        let name = new_name.get_untracked().trim().to_string();
        if name.is_empty() {
            style_status.set(Some(Err("Name the style first.".into())));
            return;
        }
        let s = state.settings;
        let style = Style {
            name: name.clone(),
            prompt: s.prompt.get_untracked(),
            negative_prompt: s.negative.get_untracked(),
        };
        let mut styles = state.prompt_library.get_untracked().styles;
        styles.insert(style);
        new_name.set(String::new());
        styles_saved(state, styles, style_status, format!("Saved the prompt as style “{name}”."));
    };
    let delete_style = move |name: String| {
        let mut styles = state.prompt_library.get_untracked().styles;
        styles.remove(&name);
        state.settings.styles.update(|list| list.retain(|n| *n != name));
        styles_saved(state, styles, style_status, format!("Deleted style “{name}”."));
    };
    let preset_status = RwSignal::new(None::<Result<String, String>>);
    let import_presets = move |ev: leptos::ev::Event| {
        let files = files_of(&ev);
        if files.is_empty() {
            return;
        }
        spawn_local(async move {
            let outcome = async {
                let mut names = Vec::new();
                for file in files {
                    let bytes = bytes_of(&file).await?;
                    let preset = Preset::parse(&String::from_utf8_lossy(&bytes))
                        .map_err(|e| format!("{}: {e}", file.name()))?;
                    prompt_library::save_preset(&preset).await?;
                    names.push(format!("“{}”", preset.name));
                }
                Ok(format!("Imported the brand preset{} {}.", plural(names.len()), names.join(", ")))
            }
            .await;
            preset_status.set(Some(outcome));
            refresh(state);
        });
    };
    let delete_preset = move |name: String| {
        spawn_local(async move {
            match prompt_library::delete_preset(&name).await {
                Ok(()) => {
                    if state.settings.preset.get_untracked().as_deref() == Some(name.as_str()) {
                        state.settings.preset.set(None);
                    }
                    preset_status.set(Some(Ok(format!("Deleted the brand preset “{name}”."))));
                }
                Err(e) => preset_status.set(Some(Err(e))),
            }
            refresh(state);
        });
    };
    view! {
        <section class="panel" id="prompts">
            <h2>"Prompts"</h2>
            <p class="muted">"Wildcards, styles and brand presets for the Generate form. They stay in this browser, like everything else."</p>
            <h3>"Wildcards"</h3>
            <p class="muted small">"A wildcard file is a list, one value a line (lines starting with # are comments), or a JSON/YAML file of named lists (sd-dynamic-prompts' format, weights as 2::value). With Dynamic prompts on, "
                <code>"__colours__"</code>" in a prompt takes a value of colours.txt; "<code>"__styles/print__"</code>" one of a folder's file, "
                <code>"__styles/*__"</code>" any of the folder's. "<code>"{red|blue}"</code>", "<code>"{2$$a|b|c}"</code>" and "
                <code>"${v=…}"</code>" work as in sd-dynamic-prompts."</p>
            <div class="actions">
                <label class="file-pick button-like">"Import .txt, .json, .yaml or .zip files…"
                    <input id="wildcard-files" type="file" multiple=true accept=".txt,.json,.yaml,.zip,text/plain,application/json,application/zip" on:change=import_wildcards />
                </label>
                <label class="file-pick button-like">"Import a folder…"
                    <input id="wildcard-folder" type="file" node_ref=folder_ref on:change=import_wildcards />
                </label>
            </div>
            {move || message("wildcard-status", wildcard_status.get())}
            {move || {
                let rows = state.prompt_library.get().wildcards.into_iter().map(|f| {
                    let collections = f.collections();
                    let names: Vec<String> = collections.names().map(str::to_string).collect();
                    let values: Vec<String> = names.iter().flat_map(|n| collections.values(n)).collect();
                    let first = shorten(&values);
                    let used = names.first().cloned().unwrap_or_else(|| f.name.clone());
                    let (a, b) = (used, f.name.clone());
                    view! {
                        <tr data-wildcard=f.name.clone()>
                            <td><code>{shorten(&shown_names(&collections))}</code></td>
                            <td>{values.len()}</td>
                            <td class="muted small">{first}</td>
                            <td class="actions">
                                <button type="button" on:click=move |_| use_wildcard(a.clone())>"Use"</button>
                                <button type="button" class="danger" on:click=move |_| delete_wildcard(b.clone())>"Delete"</button>
                            </td>
                        </tr>
                    }.into_any()
                }).collect();
                listing("wildcard", "No wildcard files yet.", &["In a prompt", "Values", "First values", ""], rows)
            }}
            <h3>"Styles"</h3>
            <p class="muted small">"A style adds to the prompt and the negative prompt: where its text has "<code>"{prompt}"</code>
                " the prompt goes there, else it is appended after a comma — as A1111's styles.csv, which imports and exports here."</p>
            <div class="actions">
                <label class="file-pick button-like">"Import styles.csv…"
                    <input id="styles-file" type="file" accept=".csv,text/csv" on:change=import_styles />
                </label>
                <button type="button" id="styles-export" on:click=export_styles
                    disabled=move || state.prompt_library.with(|l| l.styles.is_empty())>"Export styles.csv"</button>
            </div>
            <div class="row">
                <label class="field">
                    <span>"Save the current prompt as a style"</span>
                    <input id="style-name" type="text" placeholder="Style name" prop:value=move || new_name.get()
                        on:input=move |ev| new_name.set(event_target_value(&ev))
                        on:keydown=move |ev: leptos::ev::KeyboardEvent| if ev.key() == "Enter" { ev.prevent_default(); save_style(()); } />
                </label>
                <button type="button" id="style-save" on:click=move |_| save_style(())>"Save style"</button>
            </div>
            {move || message("style-status", style_status.get())}
            {move || {
                let rows = state.prompt_library.get().styles.iter().cloned().map(|st| {
                    let name = st.name.clone();
                    view! {
                        <tr data-style=st.name.clone()>
                            <td>{st.name.clone()}</td>
                            <td class="small">{st.prompt.clone()}</td>
                            <td class="small muted">{st.negative_prompt.clone()}</td>
                            <td><button type="button" class="danger" on:click=move |_| delete_style(name.clone())>"Delete"</button></td>
                        </tr>
                    }.into_any()
                }).collect();
                listing("style", "No styles yet.", &["Style", "Prompt", "Negative prompt", ""], rows)
            }}
            <h3>"Brand presets"</h3>
            <p class="muted small">"A brand preset is a style plus what a brand fixes: LoRAs and their weights, sampler, steps and CFG, the sizes and aspect ratios allowed, a palette and a seed policy. Pick one in the Generate form: every image is made under it and its parameters say "<code>"Preset: name"</code>". It is a JSON file, shared as it is ("<code>"darkroom generate --preset FILE"</code>" reads the same file)."</p>
            <div class="actions">
                <label class="file-pick button-like">"Import preset files…"
                    <input id="preset-file" type="file" multiple=true accept=".json,application/json" on:change=import_presets />
                </label>
            </div>
            {move || message("preset-status", preset_status.get())}
            {move || {
                let rows = state.prompt_library.get().presets.into_iter().map(|p| {
                    let (a, b) = (p.name.clone(), p.clone());
                    let file = format!("{}.json", crate::briefs::slug(&p.name));
                    view! {
                        <tr data-preset=p.name.clone()>
                            <td>{p.name.clone()}</td>
                            <td class="small">{preset_summary(&p)}</td>
                            <td>{p.palette.iter().map(|c| view! {
                                <i class="swatch" title=c.clone() style:background=c.clone()></i>" "
                            }).collect_view()}</td>
                            <td class="actions">
                                <button type="button" on:click=move |_| crate::briefs::download(b.to_json().as_bytes(), "application/json", &file)>"Export"</button>
                                <button type="button" class="danger" on:click=move |_| delete_preset(a.clone())>"Delete"</button>
                            </td>
                        </tr>
                    }.into_any()
                }).collect();
                listing("preset", "No brand presets yet.", &["Preset", "Settings", "Palette", ""], rows)
            }}
        </section>
    }
}

/// A section's list: a table `#<id>-list` with a row per item, or `#<id>-empty` saying so.
fn listing(id: &str, empty: &'static str, headers: &[&'static str], rows: Vec<AnyView>) -> AnyView {
    if rows.is_empty() {
        return view! { <p class="muted small" id=format!("{id}-empty")>{empty}</p> }.into_any();
    }
    view! {
        <table class="list" id=format!("{id}-list")>
            <thead><tr>{headers.iter().map(|h| view! { <th>{*h}</th> }).collect_view()}</tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}

/// What a preset sets, in a line.
fn preset_summary(p: &Preset) -> String {
    let mut parts = Vec::new();
    if !p.prompt.is_empty() {
        parts.push(format!("prompt “{}”", p.prompt));
    }
    if !p.negative_prompt.is_empty() {
        parts.push(format!("negative “{}”", p.negative_prompt));
    }
    for l in &p.loras {
        parts.push(format!("<lora:{}:{}>", l.name, l.weight));
    }
    if let Some(x) = &p.sampler {
        parts.push(x.clone());
    }
    if let Some(x) = p.steps {
        parts.push(format!("{x} steps"));
    }
    if let Some(x) = p.cfg_scale {
        parts.push(format!("CFG {x}"));
    }
    if !p.sizes.is_empty() {
        parts.push(format!("sizes {}", p.sizes.join(", ")));
    }
    if !p.aspect_ratios.is_empty() {
        parts.push(format!("ratios {}", p.aspect_ratios.join(", ")));
    }
    parts.push(match p.seed {
        SeedPolicy::Random => "random seeds".into(),
        SeedPolicy::Fixed(s) => format!("seed {s}"),
        SeedPolicy::Increment(s) => format!("seeds from {s}"),
    });
    parts.join(" · ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A file's collections as a prompt writes them.
fn shown_names(collections: &darkroom_workflow::Wildcards) -> Vec<String> {
    collections.names().map(|n| format!("__{n}__")).collect()
}

/// The first few of a list, joined, with how many more.
fn shorten(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(4).map(String::as_str).collect();
    match items.len().saturating_sub(shown.len()) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}
