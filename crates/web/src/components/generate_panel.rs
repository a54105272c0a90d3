use darkroom_pipeline::recipe::{MAX_BATCH_COUNT, MAX_BATCH_SIZE, MAX_CFG, MAX_SIDE, MAX_STEPS};
use darkroom_pipeline::Sampler;
use leptos::prelude::*;

use crate::components::control_units::ControlUnits;
use crate::components::image_input::ImageInput;
use crate::components::queue_panel::QueuePanel;
use crate::generation::{self, presets, samplers};
use crate::state::{AppState, Tab};

fn number<T: std::str::FromStr>(ev: &leptos::ev::Event) -> Option<T> {
    event_target_value(ev).trim().parse().ok()
}

/// A brand preset picked in the form: its settings shown in the form at once (sampler, steps,
/// CFG, and its first size when the form's is not one it allows); its style, LoRAs and seed
/// policy are applied to every run.
fn pick_preset(state: AppState, name: String) {
    let s = state.settings;
    if name.is_empty() {
        s.preset.set(None);
        return;
    }
    let Some(preset) = state.prompt_library.with_untracked(|l| l.preset(&name).cloned()) else { return };
    if let Some(sampler) = preset.sampler.as_deref().and_then(|x| x.parse().ok()) {
        s.sampler.set(sampler);
    }
    if let Some(steps) = preset.steps {
        s.steps.set(steps);
    }
    if let Some(cfg) = preset.cfg_scale {
        s.cfg.set(cfg);
    }
    if !preset.allows(s.width.get_untracked(), s.height.get_untracked()) {
        if let Some((w, h)) = preset.sizes().into_iter().find(|&(w, h)| preset.allows(w, h)) {
            s.width.set(w);
            s.height.set(h);
        }
    }
    s.preset.set(Some(name));
}

fn dynamic_label(d: darkroom_pipeline::Dynamic) -> &'static str {
    match d {
        darkroom_pipeline::Dynamic::Off => "Off",
        darkroom_pipeline::Dynamic::Random => "Random",
        darkroom_pipeline::Dynamic::Combinatorial => "Combinatorial",
    }
}

/// The prompt, the settings, Generate / Cancel, progress with a live preview, and this run's
/// images.
#[component]
pub fn GeneratePanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let s = state.settings;
    let running = move || state.run.get().is_some();
    let base_side = move || {
        state
            .selected_model()
            .and_then(|m| m.manifest.defaults.map(|d| d.width.max(d.height) as usize))
            .unwrap_or(512)
    };
    let model_options = move || {
        state
            .models
            .get()
            .into_iter()
            .filter(|m| m.generates())
            .map(|m| {
                let id = m.manifest.id.clone();
                let ready = m.stored.get().complete;
                let label = if ready {
                    m.manifest.name.clone()
                } else {
                    format!("{} (not downloaded)", m.manifest.name)
                };
                view! { <option value=id.clone() selected=move || s.model.get() == id>{label}</option> }
            })
            .collect_view()
    };
    let on_model = move |ev: leptos::ev::Event| {
        if let Some(m) = state.model(&event_target_value(&ev)) {
            s.apply_defaults(&m.manifest);
        }
    };
    let preset_value = move || {
        presets(base_side())
            .into_iter()
            .find(|&(_, w, h)| w == s.width.get() && h == s.height.get())
            .map(|(name, _, _)| name.to_string())
            .unwrap_or_else(|| "custom".into())
    };
    let on_preset = move |ev: leptos::ev::Event| {
        let name = event_target_value(&ev);
        if let Some((_, w, h)) = presets(base_side()).into_iter().find(|(n, _, _)| *n == name) {
            s.width.set(w);
            s.height.set(h);
        }
    };
    let seed_text = move || s.seed.get().map(|v| v.to_string()).unwrap_or_default();
    let on_seed = move |ev: leptos::ev::Event| {
        let text = event_target_value(&ev);
        s.seed.set(text.trim().parse().ok().filter(|_| !text.trim().is_empty() && text.trim() != "-1"));
    };
    let progress = move || state.run.get().map(|r| r.fraction).unwrap_or(0.0);
    let status = move || {
        state.run.get().map(|r| {
            if r.batch.1 > 1 {
                format!("{} · batch {} of {}", r.label, r.batch.0, r.batch.1)
            } else {
                r.label
            }
        })
    };
    view! {
        <section class="panel" id="generate">
            <h2>"Generate"</h2>
            <div class="generate-layout">
                <form class="settings" on:submit=move |ev| { ev.prevent_default(); generation::start(state); }>
                    <label class="field">
                        <span>"Model"</span>
                        <select id="model" on:change=on_model>
                            <option value="" disabled=true selected=move || s.model.get().is_empty()>"Pick a model"</option>
                            {model_options}
                        </select>
                    </label>
                    <Show when=move || state.prompt_library.with(|l| !l.presets.is_empty())>
                        <label class="field">
                            <span>"Brand preset"</span>
                            <select id="preset" on:change=move |ev| pick_preset(state, event_target_value(&ev))>
                                <option value="" selected=move || s.preset.get().is_none()>"None"</option>
                                {move || state.prompt_library.get().presets.into_iter().map(|p| {
                                    let name = p.name.clone();
                                    view! { <option value=p.name.clone() selected=move || s.preset.get().as_deref() == Some(name.as_str())>{p.name.clone()}</option> }
                                }).collect_view()}
                            </select>
                        </label>
                    </Show>
                    <label class="field wide">
                        <span>"Prompt"</span>
                        <textarea id="prompt" rows="4" placeholder="a lighthouse on a cliff at dusk, (dramatic clouds:1.2), oil painting"
                            prop:value=move || s.prompt.get()
                            on:input=move |ev| s.prompt.set(event_target_value(&ev))></textarea>
                    </label>
                    <div class="row wide">
                        <label class="field">
                            <span>"Dynamic prompts"</span>
                            <select id="dynamic" title="Read the prompt as a template ({a|b}, __wildcard__, {2$$a|b|c}; see Prompts): Random gives each image one expansion, Combinatorial makes every combination"
                                on:change=move |ev| if let Some(d) = darkroom_pipeline::Dynamic::parse(&event_target_value(&ev)) { s.dynamic.set(d) }>
                                {darkroom_pipeline::Dynamic::ALL.into_iter().map(|d| view! {
                                    <option value=d.name() selected=move || s.dynamic.get() == d>{dynamic_label(d)}</option>
                                }).collect_view()}
                            </select>
                        </label>
                        {move || generation::expansion_preview(state).map(|p| match p {
                            Ok((n, prompts)) => view! {
                                <p class="muted small dynamic-preview" id="dynamic-preview" role="status">
                                    {format!("{n} prompt{} — ", if n == 1 { "" } else { "s" })}
                                    {prompts.into_iter().map(|p| view! { <q>{p}</q>" " }).collect_view()}
                                </p>
                            }.into_any(),
                            Err(e) => view! { <p class="error small dynamic-preview" id="dynamic-preview" role="alert">{e}</p> }.into_any(),
                        })}
                    </div>
                    <Show when=move || state.prompt_library.with(|l| !l.styles.is_empty())>
                        <div class="field wide style-chips" id="style-chips">
                            <span class="muted small">"Styles (applied in the order picked):"</span>
                            {move || state.prompt_library.get().styles.iter().map(|st| {
                                let name = st.name.clone();
                                let title = format!("{} | {}", st.prompt, st.negative_prompt);
                                let picked = { let name = name.clone(); move || s.styles.with(|l| l.contains(&name)) };
                                let toggle = { let name = name.clone(); move |_| s.styles.update(|l| {
                                    if let Some(i) = l.iter().position(|n| *n == name) { l.remove(i); } else { l.push(name.clone()); }
                                }) };
                                view! { <button type="button" class="chip" data-style=name.clone() title=title
                                    class:picked=picked.clone() aria-pressed=move || picked().to_string() on:click=toggle>{name.clone()}</button> }
                            }).collect_view()}
                        </div>
                    </Show>
                    <Show when=move || !state.loras.get().is_empty()>
                        <div class="field wide lora-chips" id="lora-chips">
                            <span class="muted small">"LoRAs (click to add to the prompt):"</span>
                            {move || state.loras.get().into_iter().map(|l| {
                                let name = l.name.clone();
                                view! { <button type="button" class="chip" data-lora-chip=l.name.clone()
                                    on:click=move |_| crate::components::lora_manager::add_to_prompt(state, &name)>{l.name.clone()}</button> }
                            }).collect_view()}
                        </div>
                    </Show>
                    <label class="field wide">
                        <span>"Negative prompt"</span>
                        <textarea id="negative" rows="2" placeholder="blurry, lowres"
                            prop:value=move || s.negative.get()
                            on:input=move |ev| s.negative.set(event_target_value(&ev))></textarea>
                    </label>
                    <div class="row">
                        <label class="field">
                            <span>"Sampler"</span>
                            <select id="sampler" on:change=move |ev| {
                                if let Ok(v) = event_target_value(&ev).parse::<Sampler>() { s.sampler.set(v) }
                            }>
                                {samplers().into_iter().map(|x| view! {
                                    <option value=x.id() selected=move || s.sampler.get() == x>{x.display_name()}</option>
                                }).collect_view()}
                            </select>
                        </label>
                        <label class="field">
                            <span>"Steps"</span>
                            <input id="steps" type="number" min="1" max=MAX_STEPS prop:value=move || s.steps.get().to_string()
                                on:change=move |ev| if let Some(v) = number(&ev) { s.steps.set(v) } />
                        </label>
                        <label class="field">
                            <span>"CFG scale"</span>
                            <input id="cfg" type="number" min="0" max=MAX_CFG step="0.5" prop:value=move || s.cfg.get().to_string()
                                on:change=move |ev| if let Some(v) = number(&ev) { s.cfg.set(v) } />
                        </label>
                    </div>
                    <div class="row">
                        <label class="field">
                            <span>"Seed"</span>
                            <input id="seed" type="text" inputmode="numeric" placeholder="random" prop:value=seed_text on:change=on_seed />
                        </label>
                        <button type="button" class="icon" title="A random seed each run" on:click=move |_| s.seed.set(None)>"Random"</button>
                        <button type="button" class="icon" title="Reuse the last image's seed"
                            disabled=move || state.last_seed.get().is_none()
                            on:click=move |_| s.seed.set(state.last_seed.get_untracked())>"Reuse last"</button>
                    </div>
                    <div class="row">
                        <label class="field">
                            <span>"Size"</span>
                            <select id="preset" on:change=on_preset prop:value=preset_value>
                                {move || presets(base_side()).into_iter().map(|(name, w, h)| view! {
                                    <option value=name>{format!("{name} · {w}×{h}")}</option>
                                }).collect_view()}
                                <option value="custom" disabled=true>"custom"</option>
                            </select>
                        </label>
                        <label class="field narrow">
                            <span>"Width"</span>
                            <input id="width" type="number" min="8" max=MAX_SIDE step="8" prop:value=move || s.width.get().to_string()
                                on:change=move |ev| if let Some(v) = number(&ev) { s.width.set(v) } />
                        </label>
                        <label class="field narrow">
                            <span>"Height"</span>
                            <input id="height" type="number" min="8" max=MAX_SIDE step="8" prop:value=move || s.height.get().to_string()
                                on:change=move |ev| if let Some(v) = number(&ev) { s.height.set(v) } />
                        </label>
                    </div>
                    <div class="row">
                        <label class="field narrow">
                            <span>"Batch size"</span>
                            <input id="batch-size" type="number" min="1" max=MAX_BATCH_SIZE prop:value=move || s.batch_size.get().to_string()
                                on:change=move |ev| if let Some(v) = number(&ev) { s.batch_size.set(v) } />
                        </label>
                        <label class="field narrow">
                            <span>"Batch count"</span>
                            <input id="batch-count" type="number" min="1" max=MAX_BATCH_COUNT prop:value=move || s.batch_count.get().to_string()
                                on:change=move |ev| if let Some(v) = number(&ev) { s.batch_count.set(v) } />
                        </label>
                    </div>
                    <div class="row">
                        <label class="check" title="Decode with TAESD in milliseconds and keep each image's latents; finish the ones you keep (board or review, D) for the full VAE's pixels, without sampling again">
                            <input id="drafts" type="checkbox" prop:checked=move || s.draft.get()
                                on:change=move |ev| s.draft.set(event_target_checked(&ev)) />
                            "Drafts: quick TAESD decode, finish the keepers later"
                        </label>
                        {move || {
                            let taesd = !state.downloaded(darkroom_weights::ModelKind::Taesd).is_empty();
                            (s.draft.get() && !taesd).then(|| view! {
                                <span class="muted small" id="drafts-hint">"needs TAESD: download it under Models"</span>
                            })
                        }}
                    </div>
                    <HiresFix />
                    <crate::components::xyz_plot::XyzPlot />
                    <ImageInput />
                    <ControlUnits />
                    <div class="row buttons">
                        <button id="generate-button" type="submit" class="primary" disabled=running title="Ctrl+Enter">"Generate"</button>
                        <button id="queue-button" type="button" title="Ctrl+Shift+Enter"
                            on:click=move |_| generation::enqueue(state)>"Add to queue"</button>
                        <button id="cancel-button" type="button" disabled=move || !running() title="Esc"
                            on:click=move |_| generation::cancel(state)>"Cancel"</button>
                        <span class="muted small">"Ctrl+Enter generates · Ctrl+Shift+Enter queues · Esc cancels"</span>
                    </div>
                    {move || state.active().map(|b| view! {
                        <p class="small active-brief" id="active-brief">
                            "New images join the brief "<strong>{b.title.clone()}</strong>", each run an iteration. "
                            <button type="button" class="link" on:click=move |_| state.tab.set(Tab::Briefs)>"Open its board"</button>
                            " · "
                            <button type="button" class="link" id="active-brief-stop" on:click=move |_| state.set_active_brief(None)>"Stop"</button>
                        </p>
                    })}
                </form>
                <div class="output">
                    {move || state.error.get().map(|e| view! { <p class="error" id="generate-error" role="alert">{e}</p> })}
                    {move || {
                        let no_model = state.models.get().iter().all(|m| !m.generates() || !m.stored.get().complete);
                        no_model.then(|| view! {
                            <p class="hint">"No model on this device yet. "
                                <a href="#models" on:click=move |ev| { ev.prevent_default(); state.tab.set(Tab::Models); }>"Download one"</a>
                                " — it happens once; afterwards everything runs offline."</p>
                        })
                    }}
                    <Show when=running>
                        <div class="run" id="run">
                            <progress max="1" value=progress></progress>
                            <p class="muted" id="run-status">{status}</p>
                            {move || state.run.get().and_then(|r| r.preview).map(|url| view! {
                                <img class="preview" id="preview" src=url alt="live preview of the image being made" />
                            })}
                        </div>
                    </Show>
                    <QueuePanel />
                    {move || state.grid.get().map(|g| view! {
                        <figure class="result grid-result" id="grid-result">
                            <img id="grid-image" src=g.url.clone() alt="the X/Y/Z plot's grid" width=g.width height=g.height />
                            <figcaption>
                                <span>"X/Y/Z plot"</span>
                                <a class="download" href=g.url.clone() download="darkroom-grid.png">"PNG"</a>
                            </figcaption>
                        </figure>
                    })}
                    <div class="results" id="results">
                        <For
                            each=move || state.results.get()
                            key=|r| r.url.clone()
                            children=move |r| view! {
                                <figure class="result">
                                    <img src=r.url.clone() alt=r.infotext.clone() width=r.width height=r.height />
                                    <figcaption>
                                        <span>{format!("seed {}", r.seed)}</span>
                                        <a class="download" href=r.url.clone() download=format!("darkroom-{}.png", r.seed)>"PNG"</a>
                                        {crate::upscaling::button(state, r.png.clone(), None)}
                                    </figcaption>
                                </figure>
                            }
                        />
                    </div>
                </div>
            </div>
        </section>
    }
}

/// The hires fix: each image made at the form's size, then upscaled (Lanczos, or its latents
/// resized as A1111's Latent upscalers) and redrawn by an img2img pass at the larger size.
#[component]
fn HiresFix() -> impl IntoView {
    use darkroom_pipeline::Hires;
    let state = expect_context::<AppState>();
    let s = state.settings;
    let on = move || s.hires.get().is_some();
    let change = move |f: &dyn Fn(&mut Hires)| {
        if let Some(mut h) = s.hires.get_untracked() {
            f(&mut h);
            s.hires.set(Some(h));
        }
    };
    let value = move |f: fn(&Hires) -> String| s.hires.get().map(|h| f(&h)).unwrap_or_default();
    let size = move || {
        s.hires.get().map(|h| {
            let (w, h2) = h.size(s.width.get(), s.height.get());
            format!("→ {w}×{h2}")
        })
    };
    view! {
        <div class="row hires">
            <label class="check" title="A1111's hires fix: make the image at this size, upscale it, then redraw it at the larger size">
                <input id="hires" type="checkbox" prop:checked=on on:change=move |ev| {
                    s.hires.set(event_target_checked(&ev).then(|| Hires { upscaler: "Latent".into(), strength: 0.5, ..Hires::default() }))
                } />
                "Hires fix"
            </label>
            <Show when=on>
                <label class="field narrow"><span>"Upscale by"</span>
                    <input id="hires-scale" type="number" min="1.05" max="4" step="0.05" prop:value={move || value(|h| h.scale.to_string())}
                        on:change={move |ev| if let Some(v) = number::<f64>(&ev) { change(&|h| h.scale = v) }} />
                </label>
                <label class="field narrow"><span>"Hires steps"</span>
                    <input id="hires-steps" type="number" min="0" max=MAX_STEPS title="0: the same as Steps" prop:value={move || value(|h| h.steps.to_string())}
                        on:change={move |ev| if let Some(v) = number::<usize>(&ev) { change(&|h| h.steps = v) }} />
                </label>
                <label class="field narrow"><span>"Denoising"</span>
                    <input id="hires-strength" type="number" min="0.05" max="1" step="0.05" prop:value={move || value(|h| h.strength.to_string())}
                        on:change={move |ev| if let Some(v) = number::<f64>(&ev) { change(&|h| h.strength = v) }} />
                </label>
                <label class="field"><span>"Upscaler"</span>
                    <select id="hires-upscaler" on:change={move |ev| { let v = event_target_value(&ev); change(&|h| h.upscaler = v.clone()) }}>
                        {[("Latent", "Latent (bilinear)"), ("Latent (nearest)", "Latent (nearest)"), ("lanczos", "Lanczos (pixels)")].into_iter().map(|(v, label)| view! {
                            <option value=v selected={move || value(|h| h.upscaler.clone()).eq_ignore_ascii_case(v)}>{label}</option>
                        }).collect_view()}
                        // Downloaded upscaler models, by id (as the parameters record them).
                        {move || state.downloaded(darkroom_weights::ModelKind::Upscaler).into_iter().map(|m| {
                            let id = m.manifest.id.clone();
                            let picked = id.clone();
                            view! { <option value=id selected={move || value(|h| h.upscaler.clone()) == picked}>{m.manifest.name.clone()}</option> }
                        }).collect_view()}
                    </select>
                </label>
                <span class="muted small" id="hires-size">{size}</span>
            </Show>
        </div>
    }
}
