//! `darkroom grid --x AXIS [--y AXIS] [--z AXIS] <generate flags> --out DIR`: A1111's X/Y/Z
//! plot. Every cell is the generate flags with the axes' values applied (X, then Y, then Z, as
//! A1111 applies them; styles after), all at one seed unless an axis sets it; each cell is
//! written as its own PNG with its parameters, and the cells are laid out with their legends in
//! DIR/grid.png (one grid per Z value, side by side under the Z legends; each also as
//! DIR/grid-z<k>.png).

use std::path::{Path, PathBuf};

use clap::Args;
use darkroom_gpu::Gpu;
use darkroom_pipeline::grid::Plot;
use darkroom_pipeline::metadata::{encode_png, GenerationParams};
use darkroom_workflow::grid::{self, Axis, AxisKind, Rgba};

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
    let plot = Plot { x, y, z };
    let cells = plot.cells(&base, &runner.settings.style, &mut random_seed).map_err(usage)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| usage(format!("cannot create {}: {e}", args.out.display())))?;
    let total = cells.len();
    let mut images = Vec::with_capacity(total);
    let mut first_params: Option<GenerationParams> = None;
    for (n, cell) in cells.into_iter().enumerate() {
        let legend = cell.legend.join(", ");
        let mut recipe = cell.recipe;
        runner.apply_styles(&mut recipe, &cell.styles)?;
        let label = format!("cell {}/{total} ({legend}): ", n + 1);
        let made = runner
            .run(recipe, &label)
            .map_err(|f| Failure { message: format!("cell {legend}: {}", f.message), usage: f.usage })?;
        let generated = made.into_iter().next().ok_or_else(|| usage("a cell made no image".into()))?;
        let [xi, yi, zi] = cell.at;
        let name = cell_name(xi, plot.y.as_ref().map(|_| yi), plot.z.as_ref().map(|_| zi));
        let path = args.out.join(name);
        write_atomically(&path, &generated.to_png()?)?;
        println!("{}", path.display());
        first_params.get_or_insert_with(|| generated.params.clone());
        let img = &generated.image;
        images.push(Rgba { width: img.width, height: img.height, pixels: img.rgba.clone() });
    }
    let params = plot.params(&first_params.unwrap_or_else(|| unreachable!("a grid has a cell")));
    if plot.z.is_some() {
        let [xs, ys, _] = plot.dims();
        for (k, cells) in images.chunks(xs * ys).enumerate() {
            let one = Plot { z: None, ..plot.clone() };
            write_png(&args.out.join(format!("grid-z{}.png", k + 1)), &one.image(cells), &params)?;
        }
    }
    let path = args.out.join("grid.png");
    write_png(&path, &plot.image(&images), &params)?;
    println!("{}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_named_by_the_axes_given() {
        assert_eq!(cell_name(0, Some(2), None), "x1-y3.png");
        assert_eq!(cell_name(1, None, Some(0)), "x2-z1.png");
    }
}
