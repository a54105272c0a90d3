//! The app's X/Y/Z plot: the form's axes as a [`Plot`] (A1111's names and value syntax, the
//! CLI's `darkroom grid` plan), and the grid image laid out from the cells' images when the last
//! one is done — with the first cell's parameters and the plot's axes, as A1111 writes them.

use darkroom_pipeline::grid::Plot;
use darkroom_pipeline::metadata::{encode_png, encode_png_plain, GenerationParams};
use darkroom_pipeline::Image;
use darkroom_workflow::grid::{parse_axis, Rgba};
use leptos::prelude::*;

use crate::state::{png_url, AppState};

/// One axis as the form holds it: a kind (`steps`, `cfg`, … or empty for none) and its values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AxisForm {
    pub kind: String,
    pub values: String,
}

/// The grid made last.
#[derive(Debug, Clone, PartialEq)]
pub struct GridImage {
    pub url: String,
    pub width: usize,
    pub height: usize,
}

/// The plot the form's axes describe: `None` without an X axis; an axis without a kind is left
/// out, one whose values do not read says why.
pub fn plot_of(axes: &[AxisForm; 3]) -> Result<Option<Plot>, String> {
    let axis = |name: &str, a: &AxisForm| {
        if a.kind.is_empty() {
            return Ok(None);
        }
        if a.values.trim().is_empty() {
            return Err(format!(
                "The plot's {name} axis has no values: write them, e.g. 1-7 (+3) or cat, owl."
            ));
        }
        parse_axis(&format!("{}:{}", a.kind, a.values))
            .map(Some)
            .map_err(|e| format!("The plot's {name} axis: {}.", e.message))
    };
    let Some(x) = axis("X", &axes[0])? else {
        return Ok(None);
    };
    Ok(Some(Plot { x, y: axis("Y", &axes[1])?, z: axis("Z", &axes[2])? }))
}

/// Forgets the last grid.
pub fn clear(state: AppState) {
    if let Some(old) = state.grid.get_untracked() {
        let _ = web_sys::Url::revoke_object_url(&old.url);
    }
    state.grid.set(None);
}

/// Lays out this run's results (the plot's cells, in order) as the grid image.
pub fn compose(state: AppState, plot: &Plot) {
    let results = state.results.get_untracked();
    let [xs, ys, zs] = plot.dims();
    if results.len() != xs * ys * zs {
        state.error.set(Some(format!(
            "The grid needs {} images and {} were made.",
            xs * ys * zs,
            results.len()
        )));
        return;
    }
    let mut cells = Vec::with_capacity(results.len());
    for r in &results {
        match Image::from_png(&r.png) {
            Ok(img) => cells.push(Rgba { width: img.width, height: img.height, pixels: img.rgba }),
            Err(e) => {
                state.error.set(Some(format!("A cell's image could not be read for the grid: {e}")));
                return;
            }
        }
    }
    let image = plot.image(&cells);
    let (w, h) = (image.width as u32, image.height as u32);
    let png = match GenerationParams::parse_infotext(&results[0].infotext) {
        Ok(first) => encode_png(&image.pixels, w, h, &plot.params(&first)),
        Err(_) => encode_png_plain(&image.pixels, w, h),
    };
    match png {
        Ok(png) => {
            clear(state);
            state.grid.set(Some(GridImage { url: png_url(&png), width: image.width, height: image.height }));
        }
        Err(e) => state.error.set(Some(format!("The grid image could not be written: {e}"))),
    }
}
