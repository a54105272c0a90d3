//! The form's X/Y/Z plot (A1111's script): up to three axes, each a setting and its values
//! (a list, or A1111's ranges `1-7 (+3)`, `1-10 [4]`), and *Make grid*, which makes one image
//! per cell at the form's settings and lays them out with their legends.

use darkroom_workflow::grid::AxisKind;
use leptos::prelude::*;

use crate::generation;
use crate::plot::plot_of;
use crate::state::AppState;

/// What to write for an axis's values, by kind.
fn example(kind: &str) -> &'static str {
    match kind {
        "seed" => "1, 2, 3 or -1 (random)",
        "steps" => "1-7 (+3) or 4, 8, 12",
        "cfg" => "1-10 [4] or 3.5, 7",
        "sampler" => "euler, euler_a, dpmpp_2m",
        "prompt" => "cat, owl (cat is replaced)",
        "negative" => "blurry, lowres | none",
        "size" => "512x512, 768x512",
        "strength" => "0.3-0.9 [3]",
        "model" => "model ids",
        "lora" => "0-1 [5]",
        "style" => "none, Ink, Poster",
        _ => "",
    }
}

#[component]
pub fn XyzPlot() -> impl IntoView {
    let state = expect_context::<AppState>();
    let plot = state.settings.plot;
    let running = move || state.run.get().is_some();
    let row = move |i: usize, name: &'static str| {
        let id = name.to_lowercase();
        let set_kind = move |ev: leptos::ev::Event| plot.update(|p| p[i].kind = event_target_value(&ev));
        let set_values = move |ev: leptos::ev::Event| plot.update(|p| p[i].values = event_target_value(&ev));
        view! {
            <div class="row">
                <label class="field">
                    <span>{format!("{name} axis")}</span>
                    <select id=format!("{id}-type") on:change=set_kind>
                        <option value="" selected=move || plot.with(|p| p[i].kind.is_empty())>"None"</option>
                        {AxisKind::ALL.into_iter().map(|(key, kind)| view! {
                            <option value=key selected=move || plot.with(|p| p[i].kind == key)>{kind.label()}</option>
                        }).collect_view()}
                    </select>
                </label>
                <label class="field grow">
                    <span>"Values"</span>
                    <input id=format!("{id}-values") type="text" prop:value=move || plot.with(|p| p[i].values.clone())
                        placeholder=move || plot.with(|p| example(&p[i].kind))
                        disabled=move || plot.with(|p| p[i].kind.is_empty()) on:input=set_values />
                </label>
            </div>
        }
    };
    let summary = move || match plot_of(&plot.get()) {
        Ok(None) => None,
        Ok(Some(p)) => {
            let [xs, ys, zs] = p.dims();
            let grids = if zs > 1 { format!(" in {zs} grids") } else { String::new() };
            Some(Ok(format!("{} cells ({xs} × {ys}){grids}, one image each.", xs * ys * zs)))
        }
        Err(e) => Some(Err(e)),
    };
    view! {
        <details class="xyz" id="xyz">
            <summary>"X/Y/Z plot"</summary>
            <p class="muted small">"Every cell is the form's settings with the axes' values, at one seed unless an axis sets it; the grid has their legends, and each cell joins the gallery with its own parameters. Prompt S/R replaces the first value wherever it is in the prompt."</p>
            {row(0, "X")}
            {row(1, "Y")}
            {row(2, "Z")}
            <div class="row buttons">
                <button type="button" id="grid-button" disabled=running on:click=move |_| generation::start_grid(state)>"Make grid"</button>
                {move || summary().map(|s| match s {
                    Ok(t) => view! { <span class="muted small" id="grid-plan">{t}</span> }.into_any(),
                    Err(e) => view! { <span class="error small" id="grid-plan">{e}</span> }.into_any(),
                })}
            </div>
        </details>
    }
}
