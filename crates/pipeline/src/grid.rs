//! A1111's X/Y/Z plot as recipes: every cell is the base recipe with the axes' values applied
//! (X, then Y, then Z, as A1111 applies them), at the base's seed unless an axis sets it, with
//! the styles a style axis adds. The plan is the CLI's `darkroom grid` and the app's alike;
//! laying the cells out with their legends is `darkroom_workflow::grid`'s.

use darkroom_workflow::grid::{self, Axis, AxisKind, AxisValue, Rgba};

use crate::metadata::GenerationParams;
use crate::{Recipe, Sampler};

/// One cell: its recipe, the styles to apply to it, where it is and its legends.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub recipe: Recipe,
    pub styles: Vec<String>,
    /// Column, row, grid (0 for an axis not given).
    pub at: [usize; 3],
    /// The legend of each axis given, X first.
    pub legend: Vec<String>,
}

/// The axes of a plot: X, and Y and Z when given.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    pub x: Axis,
    pub y: Option<Axis>,
    pub z: Option<Axis>,
}

impl Plot {
    fn axes(&self) -> impl Iterator<Item = &Axis> {
        [Some(&self.x), self.y.as_ref(), self.z.as_ref()].into_iter().flatten()
    }

    /// Columns, rows and grids.
    pub fn dims(&self) -> [usize; 3] {
        let n = |a: Option<&Axis>| a.map_or(1, |a| a.values.len());
        [self.x.values.len(), n(self.y.as_ref()), n(self.z.as_ref())]
    }

    /// Every cell in A1111's order (X fastest, then Y, then Z). `styles` are the styles every
    /// cell gets; `random_seed` answers a seed axis's -1. Errors name the cell.
    pub fn cells(
        &self,
        base: &Recipe,
        styles: &[String],
        random_seed: &mut dyn FnMut() -> u64,
    ) -> Result<Vec<Cell>, String> {
        for a in self.axes() {
            if a.kind == AxisKind::Prompt {
                let AxisValue::Text(from) = &a.values[0] else { unreachable!("prompt values are text") };
                if !base.prompt.contains(from.as_str()) && !base.negative_prompt.contains(from.as_str()) {
                    return Err(format!(
                        "prompt axis: its first value {from:?} is what is searched, and it is in neither the prompt nor the negative prompt"
                    ));
                }
            }
            if a.kind == AxisKind::LoraWeight && !base.prompt.contains("<lora:") {
                return Err("lora axis: the prompt has no <lora:name:weight> tag to weigh".into());
            }
        }
        let [xs, ys, zs] = self.dims();
        let mut out = Vec::with_capacity(xs * ys * zs);
        for zi in 0..zs {
            for yi in 0..ys {
                for xi in 0..xs {
                    let mut cell = Cell {
                        recipe: base.clone(),
                        styles: styles.to_vec(),
                        at: [xi, yi, zi],
                        legend: Vec::new(),
                    };
                    for (a, i) in [(Some(&self.x), xi), (self.y.as_ref(), yi), (self.z.as_ref(), zi)] {
                        let Some(a) = a else { continue };
                        cell.legend.push(a.legend(i));
                        apply(a, i, &mut cell.recipe, &mut cell.styles, random_seed)
                            .map_err(|e| format!("cell {}: {e}", cell.legend.join(", ")))?;
                    }
                    out.push(cell);
                }
            }
        }
        Ok(out)
    }

    /// The grid image of the cells' images (in [`Plot::cells`]' order): one grid per Z value
    /// with the X and Y legends, side by side under the Z legends.
    pub fn image(&self, cells: &[Rgba]) -> Rgba {
        let [xs, ys, zs] = self.dims();
        let legends =
            |a: Option<&Axis>| a.map_or(Vec::new(), |a| (0..a.values.len()).map(|i| a.legend(i)).collect());
        let (x_legends, y_legends) = (legends(Some(&self.x)), legends(self.y.as_ref()));
        let mut grids: Vec<Rgba> = cells
            .chunks(xs * ys)
            .take(zs)
            .map(|c| grid::draw_grid(c, xs, ys, &x_legends, &y_legends))
            .collect();
        match &self.z {
            Some(_) => grid::join_grids(&grids, &legends(self.z.as_ref())),
            None => grids.pop().unwrap_or_else(|| Rgba::white(1, 1)),
        }
    }

    /// The grid's parameters: the first cell's, and the plot's axes as A1111 records them.
    pub fn params(&self, first: &GenerationParams) -> GenerationParams {
        let mut params = first.clone();
        params.extra.push(("Script".into(), "X/Y/Z plot".into()));
        for (name, a) in [("X", Some(&self.x)), ("Y", self.y.as_ref()), ("Z", self.z.as_ref())] {
            if let Some(a) = a {
                params.extra.push((format!("{name} Type"), a.kind.label().into()));
                params.extra.push((
                    format!("{name} Values"),
                    a.spec.split_once(':').map_or("", |(_, v)| v).trim().into(),
                ));
            }
        }
        params
    }
}

/// Sets every `<lora:name:w>` tag's weight to `weight`.
pub fn with_lora_weight(prompt: &str, weight: f64) -> String {
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

/// Value `i` of `axis` applied to the recipe; a style axis adds to `styles`.
fn apply(
    axis: &Axis,
    i: usize,
    recipe: &mut Recipe,
    styles: &mut Vec<String>,
    random_seed: &mut dyn FnMut() -> u64,
) -> Result<(), String> {
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
        (kind, value) => return Err(format!("a {} axis cannot take {value:?}", kind.label())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plot(x: &str, y: Option<&str>, z: Option<&str>) -> Plot {
        let axis = |s: &str| grid::parse_axis(s).unwrap();
        Plot { x: axis(x), y: y.map(axis), z: z.map(axis) }
    }

    #[test]
    fn lora_weights_change_in_every_tag() {
        assert_eq!(
            with_lora_weight("a <lora:ink:1> b <lora:oil:0.3>", 0.5),
            "a <lora:ink:0.5> b <lora:oil:0.5>"
        );
        assert_eq!(with_lora_weight("no tags", 2.0), "no tags");
    }

    #[test]
    fn cells_apply_x_then_y_then_z_in_a1111_order() {
        let base = Recipe { prompt: "a cat at dusk".into(), seed: Some(9), ..Recipe::default() };
        let p = plot("steps:1-3", Some("prompt:cat,owl"), Some("style:none,Ink"));
        let cells = p.cells(&base, &["Brand".to_string()], &mut || 0).unwrap();
        assert_eq!(p.dims(), [3, 2, 2]);
        assert_eq!(cells.len(), 12);
        let c = &cells[3 + 2 + 6];
        assert_eq!(c.at, [2, 1, 1]);
        assert_eq!((c.recipe.steps, c.recipe.prompt.as_str(), c.recipe.seed), (3, "a owl at dusk", Some(9)));
        assert_eq!(c.styles, ["Brand", "Ink"]);
        assert_eq!(c.legend, ["Steps: 3", "owl", "Styles: Ink"]);
        assert_eq!(cells[0].styles, ["Brand"]);
    }

    #[test]
    fn axes_that_cannot_apply_are_refused() {
        let base = Recipe { prompt: "a cat".into(), ..Recipe::default() };
        let e = plot("prompt:dog,owl", None, None).cells(&base, &[], &mut || 0).unwrap_err();
        assert!(e.contains("its first value \"dog\" is what is searched"), "{e}");
        let e = plot("lora:0.5,1", None, None).cells(&base, &[], &mut || 0).unwrap_err();
        assert!(e.contains("no <lora:name:weight> tag"), "{e}");
        let e = plot("sampler:euler,nope", None, None).cells(&base, &[], &mut || 0).unwrap_err();
        assert!(e.starts_with("cell Sampler: nope: unknown sampler"), "{e}");
        let seeded = plot("seed:-1,5", None, None).cells(&base, &[], &mut || 77).unwrap();
        assert_eq!(seeded.iter().map(|c| c.recipe.seed).collect::<Vec<_>>(), [Some(77), Some(5)]);
    }
}
