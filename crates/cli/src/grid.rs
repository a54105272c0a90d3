//! `darkroom grid --x AXIS [--y AXIS] [--z AXIS] <generate flags> --out DIR`: A1111's X/Y/Z
//! plot. Every cell is the generate flags with the axes' values applied (X, then Y, then Z, as
//! A1111 applies them; styles after), all at one seed unless an axis sets it; each cell is
//! written as its own PNG with its parameters, and the cells are laid out with their legends in
//! DIR/grid.png (one grid per Z value, side by side under the Z legends; each also as
//! DIR/grid-z<k>.png).

use std::path::{Path, PathBuf};

use clap::Args;
use darkroom_gpu::Gpu;
use darkroom_pipeline::metadata::{encode_png, GenerationParams};
use darkroom_pipeline::{Recipe, Sampler};
use darkroom_workflow::grid::{self, Axis, AxisKind, AxisValue, Rgba};

use crate::failure::{usage, Failure};
use crate::generate::{random_seed, write_atomically, Runner, Settings};

#[derive(Args)]
pub struct GridArgs {
    /// The X axis (columns) as NAME:VALUES: seed, steps, cfg, sampler, prompt (search and
    /// replace: the first value is searched, each value replaces it), negative, size (WxH),
    /// strength, model, lora (every <lora:…> tag's weight), style. Values are a comma list or
    /// A1111 ranges: "steps:1-7 (+3)", "cfg:1-10 [4]", "prompt:cat,owl".
    #[arg(long)]
    pub x: String,
    /// The Y axis (rows), as --x.
    #[arg(long)]
    pub y: Option<String>,
    /// The Z axis (one grid per value), as --x.
    #[arg(long)]
    pub z: Option<String>,
    /// What to make (A1111 syntax).
    #[arg(long)]
    pub prompt: String,
    #[command(flatten)]
    pub settings: Settings,
    /// The folder for grid.png and the cells (x<i>[-y<j>][-z<k>].png).
    #[arg(long)]
    pub out: PathBuf,
}

fn axis(flag: &str, spec: &str) -> Result<Axis, Failure> {
    grid::parse_axis(spec).map_err(|e| usage(format!("--{flag}: {e}")))
}

/// Sets every `<lora:name:w>` tag's weight to `weight`.
fn with_lora_weight(prompt: &str, weight: f64) -> String {
    let mut out = String::new();
    let mut rest = prompt;
    while let Some(open) = rest.find("<lora:") {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else { break };
        let tag = &rest[open + 6..open + close];
        let name = tag.split(':').next().unwrap_or(tag);
        out.push_str(&format!("<lora:{name}:{}>", AxisValue::Float(weight).text()));
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// `value` of `axis` applied to the recipe; a style axis adds to `styles`.
fn apply(axis: &Axis, i: usize, recipe: &mut Recipe, styles: &mut Vec<String>) -> Result<(), String> {
    let value = &axis.values[i];
    match (axis.kind, value) {
        (AxisKind::Seed, AxisValue::Int(s)) => {
            recipe.seed = Some(if *s < 0 { random_seed() } else { *s as u64 })
        }
        (AxisKind::Steps, AxisValue::Int(s)) => {
            recipe.steps = usize::try_from(*s).map_err(|_| format!("steps {s} is below 1"))?
        }
        (AxisKind::Cfg, AxisValue::Float(c)) => recipe.cfg_scale = *c as f32,
        (AxisKind::Strength, AxisValue::Float(s)) => recipe.strength = Some(*s),
        (AxisKind::LoraWeight, AxisValue::Float(w)) => recipe.prompt = with_lora_weight(&recipe.prompt, *w),
        (AxisKind::Size, AxisValue::Size(w, h)) => (recipe.width, recipe.height) = (*w, *h),
        (AxisKind::Sampler, AxisValue::Text(s)) => recipe.sampler = s.parse::<Sampler>()?,
        (AxisKind::Negative, AxisValue::Text(n)) => recipe.negative_prompt = n.clone(),
        (AxisKind::Model, AxisValue::Text(m)) => recipe.model = m.clone(),
        (AxisKind::Style, AxisValue::Text(s)) => {
            if !s.eq_ignore_ascii_case("none") {
                styles.push(s.clone());
            }
        }
        (AxisKind::Prompt, AxisValue::Text(to)) => {
            let AxisValue::Text(from) = &axis.values[0] else { unreachable!("prompt values are text") };
            recipe.prompt = recipe.prompt.replace(from.as_str(), to);
            recipe.negative_prompt = recipe.negative_prompt.replace(from.as_str(), to);
        }
        (kind, value) => unreachable!("{kind:?} axis with {value:?}"),
    }
    Ok(())
}

/// Cell (x, y, z)'s file name: only the axes given are named.
fn cell_name(x: usize, y: Option<usize>, z: Option<usize>) -> String {
    let mut name = format!("x{}", x + 1);
    if let Some(y) = y {
        name.push_str(&format!("-y{}", y + 1));
    }
    if let Some(z) = z {
        name.push_str(&format!("-z{}", z + 1));
    }
    name + ".png"
}

fn write_png(path: &Path, img: &Rgba, params: &GenerationParams) -> Result<(), Failure> {
    let png = encode_png(&img.pixels, img.width as u32, img.height as u32, params)
        .map_err(|e| Failure { message: format!("{}: {e}", path.display()), usage: false })?;
    write_atomically(path, &png)
}

pub fn run(gpu: &Gpu, args: GridArgs) -> Result<(), Failure> {
    let x = axis("x", &args.x)?;
    let y = args.y.as_deref().map(|s| axis("y", s)).transpose()?;
    let z = args.z.as_deref().map(|s| axis("z", s)).transpose()?;
    let axes: Vec<&Axis> = [Some(&x), y.as_ref(), z.as_ref()].into_iter().flatten().collect();
    if axes.iter().any(|a| a.kind == AxisKind::LoraWeight) && !args.settings.loras.is_empty() {
        return Err(usage("a lora axis sets the weight of the prompt's <lora:name:weight> tags: write the LoRAs as tags (with --lora-dir) instead of --lora".into()));
    }
    let mut runner = Runner::new(gpu, args.settings.clone())?;
    let mut base = runner.recipe(&args.prompt);
    base.seed = Some(base.seed.unwrap_or_else(random_seed));
    // Every cell is the same job under a preset: one seed, the axes varying what they name.
    let base = runner.apply_preset(base, 0, runner.size_chosen())?;
    for a in &axes {
        if a.kind == AxisKind::Prompt {
            let AxisValue::Text(from) = &a.values[0] else { unreachable!() };
            if !base.prompt.contains(from.as_str()) && !base.negative_prompt.contains(from.as_str()) {
                return Err(usage(format!(
                    "prompt axis: its first value {from:?} is what is searched, and it is in neither the prompt nor the negative prompt"
                )));
            }
        }
        if a.kind == AxisKind::LoraWeight && !base.prompt.contains("<lora:") {
            return Err(usage("lora axis: the prompt has no <lora:name:weight> tag to weigh".into()));
        }
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| usage(format!("cannot create {}: {e}", args.out.display())))?;
    let (xs, ys, zs) =
        (x.values.len(), y.as_ref().map_or(1, |a| a.values.len()), z.as_ref().map_or(1, |a| a.values.len()));
    let total = xs * ys * zs;
    let mut grids = Vec::new();
    let mut first_params: Option<GenerationParams> = None;
    for zi in 0..zs {
        let mut cells = Vec::new();
        for yi in 0..ys {
            for xi in 0..xs {
                let mut recipe = base.clone();
                let mut styles = runner.settings.style.clone();
                let mut legend = vec![x.legend(xi)];
                let cell = |e: String, legend: &[String]| usage(format!("cell {}: {e}", legend.join(", ")));
                apply(&x, xi, &mut recipe, &mut styles).map_err(|e| cell(e, &legend))?;
                if let Some(y) = &y {
                    legend.push(y.legend(yi));
                    apply(y, yi, &mut recipe, &mut styles).map_err(|e| cell(e, &legend))?;
                }
                if let Some(z) = &z {
                    legend.push(z.legend(zi));
                    apply(z, zi, &mut recipe, &mut styles).map_err(|e| cell(e, &legend))?;
                }
                runner.apply_styles(&mut recipe, &styles)?;
                let n = cells.len() + zi * xs * ys + 1;
                let label = format!("cell {n}/{total} ({}): ", legend.join(", "));
                let images = runner.run(recipe, &label).map_err(|f| Failure {
                    message: format!("cell {}: {}", legend.join(", "), f.message),
                    usage: f.usage,
                })?;
                let generated =
                    images.into_iter().next().ok_or_else(|| usage("a cell made no image".into()))?;
                let path = args.out.join(cell_name(xi, y.as_ref().map(|_| yi), z.as_ref().map(|_| zi)));
                write_atomically(&path, &generated.to_png()?)?;
                println!("{}", path.display());
                first_params.get_or_insert_with(|| generated.params.clone());
                let img = &generated.image;
                cells.push(Rgba { width: img.width, height: img.height, pixels: img.rgba.clone() });
            }
        }
        let x_legends: Vec<String> = (0..xs).map(|i| x.legend(i)).collect();
        let y_legends: Vec<String> =
            y.as_ref().map_or(Vec::new(), |a| (0..ys).map(|i| a.legend(i)).collect());
        grids.push(grid::draw_grid(&cells, xs, ys, &x_legends, &y_legends));
    }
    // The grid's parameters: the first cell's, and the plot's axes as A1111 records them.
    let mut params = first_params.unwrap_or_else(|| unreachable!("a grid has a cell"));
    params.extra.push(("Script".into(), "X/Y/Z plot".into()));
    for (name, a) in [("X", Some(&x)), ("Y", y.as_ref()), ("Z", z.as_ref())] {
        if let Some(a) = a {
            params.extra.push((format!("{name} Type"), a.kind.label().into()));
            params.extra.push((
                format!("{name} Values"),
                a.spec.split_once(':').map_or("", |(_, v)| v).trim().into(),
            ));
        }
    }
    let image = match &z {
        Some(z) => {
            for (k, g) in grids.iter().enumerate() {
                write_png(&args.out.join(format!("grid-z{}.png", k + 1)), g, &params)?;
            }
            let titles: Vec<String> = (0..zs).map(|i| z.legend(i)).collect();
            grid::join_grids(&grids, &titles)
        }
        None => grids.pop().unwrap_or_else(|| unreachable!("one grid")),
    };
    let path = args.out.join("grid.png");
    write_png(&path, &image, &params)?;
    println!("{}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_weights_change_in_every_tag() {
        assert_eq!(
            with_lora_weight("a <lora:ink:1> b <lora:oil:0.3>", 0.5),
            "a <lora:ink:0.5> b <lora:oil:0.5>"
        );
        assert_eq!(with_lora_weight("no tags", 2.0), "no tags");
        assert_eq!(cell_name(0, Some(2), None), "x1-y3.png");
    }
}
