//! X/Y/Z plots as A1111's script makes them: axes given as `name:values`, values as lists or
//! A1111's ranges, and the labelled grid image.
//!
//! Ranges (A1111's syntax): `1-5` is 1 … 5; `1-7 (+3)` steps by 3 (1, 4, 7); `10-5 (-3)` counts
//! down (10, 7); `1-10 [4]` is 4 values spread evenly, whole numbers rounded down on integer
//! axes (1, 4, 7, 10); on number axes `1-3 (+0.5)` and `0-1 [5]` give fractions. Values are
//! separated by commas, read as CSV (so `"a, b",c` is two values).

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};

/// What an axis changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AxisKind {
    Seed,
    Steps,
    Cfg,
    Sampler,
    /// Prompt S/R: the first value is searched in the prompt and the negative prompt, and each
    /// value replaces it.
    Prompt,
    Negative,
    /// `WxH`.
    Size,
    Strength,
    Model,
    /// The weight of every `<lora:…>` tag in the prompt.
    LoraWeight,
    /// Style names; `none` for no style.
    Style,
}

impl AxisKind {
    pub const ALL: [(&'static str, AxisKind); 11] = [
        ("seed", AxisKind::Seed),
        ("steps", AxisKind::Steps),
        ("cfg", AxisKind::Cfg),
        ("sampler", AxisKind::Sampler),
        ("prompt", AxisKind::Prompt),
        ("negative", AxisKind::Negative),
        ("size", AxisKind::Size),
        ("strength", AxisKind::Strength),
        ("model", AxisKind::Model),
        ("lora", AxisKind::LoraWeight),
        ("style", AxisKind::Style),
    ];

    /// The label A1111 puts before a value.
    pub fn label(self) -> &'static str {
        match self {
            AxisKind::Seed => "Seed",
            AxisKind::Steps => "Steps",
            AxisKind::Cfg => "CFG Scale",
            AxisKind::Sampler => "Sampler",
            AxisKind::Prompt => "Prompt S/R",
            AxisKind::Negative => "Negative prompt",
            AxisKind::Size => "Size",
            AxisKind::Strength => "Denoising",
            AxisKind::Model => "Model",
            AxisKind::LoraWeight => "LoRA weight",
            AxisKind::Style => "Styles",
        }
    }
}

/// One value of an axis.
#[derive(Debug, Clone, PartialEq)]
pub enum AxisValue {
    Int(i64),
    Float(f64),
    Text(String),
    Size(usize, usize),
}

impl AxisValue {
    /// As the grid's legend writes it.
    pub fn text(&self) -> String {
        match self {
            AxisValue::Int(v) => v.to_string(),
            // Rounded, so 0.1 steps do not print as 0.30000000000000004.
            AxisValue::Float(v) => {
                let r = (v * 1e8).round() / 1e8;
                if r.fract() == 0.0 {
                    format!("{r:.1}")
                } else {
                    format!("{r}")
                }
            }
            AxisValue::Text(t) => t.clone(),
            AxisValue::Size(w, h) => format!("{w}x{h}"),
        }
    }
}

/// An axis: what it changes and its values, with the text it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub kind: AxisKind,
    pub values: Vec<AxisValue>,
    pub spec: String,
}

impl Axis {
    /// Cell `i`'s legend: "Steps: 4"; Prompt S/R shows the value alone, as A1111 does.
    pub fn legend(&self, i: usize) -> String {
        let value = self.values[i].text();
        match self.kind {
            AxisKind::Prompt => value,
            kind => format!("{}: {value}", kind.label()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{axis}: {message}")]
pub struct AxisError {
    pub axis: String,
    pub message: String,
}

/// Comma-separated values read as CSV and trimmed (empty ones dropped).
pub fn split_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut started = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if !started || field.trim().is_empty() => {
                quoted = true;
                field.clear();
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut field));
                started = false;
                continue;
            }
            c => field.push(c),
        }
        started = true;
    }
    out.push(field);
    out.into_iter().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect()
}

/// `a-b` with its two numbers and what follows (`(+s)`, `[n]` or nothing).
fn range_parts(value: &str) -> Option<(String, String, String)> {
    let v: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    // The first number may carry a sign; the dash after it separates.
    let first_end = {
        let body_start = usize::from(v.starts_with(['+', '-']));
        let mut i = body_start;
        let bytes = v.as_bytes();
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if i == body_start {
            return None;
        }
        i
    };
    let rest = v[first_end..].strip_prefix('-')?;
    let second_len = {
        let body = usize::from(rest.starts_with(['+', '-']));
        let mut i = body;
        let bytes = rest.as_bytes();
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if i == body {
            return None;
        }
        i
    };
    Some((v[..first_end].to_string(), rest[..second_len].to_string(), rest[second_len..].to_string()))
}

/// numpy's linspace.
fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            (0..n).map(|i| if i == n - 1 { end } else { start + step * i as f64 }).collect()
        }
    }
}

/// Whole-number values: lists and A1111's integer ranges.
pub fn int_values(text: &str) -> Result<Vec<i64>, String> {
    let mut out = Vec::new();
    for value in split_values(text) {
        let bad = || format!("{value:?} is not a whole number or a range such as 1-7 (+3) or 1-10 [4]");
        match range_parts(&value) {
            Some((a, b, tail)) if !a.contains('.') && !b.contains('.') => {
                let (a, b): (i64, i64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if tail.is_empty() {
                    out.extend(a..=b);
                } else if let Some(step) = tail.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
                    if !step.starts_with(['+', '-']) {
                        return Err(bad());
                    }
                    let step: i64 = step.parse().map_err(|_| bad())?;
                    if step == 0 {
                        return Err(format!("{value:?}: a step of 0 never ends"));
                    }
                    // A1111: range(a, b + 1, step).
                    let end = b + 1;
                    let mut x = a;
                    while (step > 0 && x < end) || (step < 0 && x > end) {
                        out.push(x);
                        x += step;
                    }
                } else if let Some(n) = tail.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                    let n: usize = n.parse().map_err(|_| bad())?;
                    out.extend(linspace(a as f64, b as f64, n).into_iter().map(|x| x.trunc() as i64));
                } else {
                    return Err(bad());
                }
            }
            _ => out.push(value.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

/// Number values: lists and A1111's ranges with fractional steps.
pub fn float_values(text: &str) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    for value in split_values(text) {
        let bad = || format!("{value:?} is not a number or a range such as 1-3 (+0.5) or 0-1 [5]");
        match range_parts(&value) {
            Some((a, b, tail)) => {
                let (a, b): (f64, f64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if tail.is_empty() || tail.starts_with('(') {
                    let step = match tail.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
                        None if tail.is_empty() => 1.0,
                        Some(step) if step.starts_with(['+', '-']) => {
                            step.parse::<f64>().map_err(|_| bad())?
                        }
                        _ => return Err(bad()),
                    };
                    if step == 0.0 {
                        return Err(format!("{value:?}: a step of 0 never ends"));
                    }
                    // numpy's arange(a, b + step, step).
                    let stop = b + step;
                    let n = ((stop - a) / step).ceil().max(0.0) as usize;
                    out.extend((0..n).map(|i| a + i as f64 * step));
                } else if let Some(n) = tail.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                    out.extend(linspace(a, b, n.parse().map_err(|_| bad())?));
                } else {
                    return Err(bad());
                }
            }
            None => out.push(value.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

/// `name:values`, e.g. `steps:1-7 (+3)`, `cfg:1-10 [4]`, `prompt:cat,owl`, `size:512x512,768x512`.
pub fn parse_axis(spec: &str) -> Result<Axis, AxisError> {
    let names = || AxisKind::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let (name, values) = spec.split_once(':').ok_or_else(|| AxisError {
        axis: spec.to_string(),
        message: format!("write NAME:VALUES, such as steps:1-7 (+3); names: {}", names()),
    })?;
    let name = name.trim().to_lowercase();
    let kind = AxisKind::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k).ok_or_else(|| AxisError {
        axis: spec.to_string(),
        message: format!("no axis called {name:?}; names: {}", names()),
    })?;
    let fail = |message: String| AxisError { axis: name.clone(), message };
    let values: Vec<AxisValue> = match kind {
        AxisKind::Seed | AxisKind::Steps => {
            int_values(values).map_err(fail)?.into_iter().map(AxisValue::Int).collect()
        }
        AxisKind::Cfg | AxisKind::Strength | AxisKind::LoraWeight => {
            float_values(values).map_err(fail)?.into_iter().map(AxisValue::Float).collect()
        }
        AxisKind::Size => split_values(values)
            .into_iter()
            .map(|v| {
                let (w, h) =
                    v.split_once(['x', 'X', '×']).ok_or_else(|| fail(format!("{v:?} is not WxH")))?;
                let (w, h) = (w.trim().parse(), h.trim().parse());
                match (w, h) {
                    (Ok(w), Ok(h)) => Ok(AxisValue::Size(w, h)),
                    _ => Err(fail(format!("{v:?} is not WxH"))),
                }
            })
            .collect::<Result<_, _>>()?,
        _ => split_values(values).into_iter().map(AxisValue::Text).collect(),
    };
    if values.is_empty() {
        return Err(fail("no values".into()));
    }
    Ok(Axis { kind, values, spec: spec.to_string() })
}

// ---------------------------------------------------------------------------------------------
// The image.

/// An RGBA image.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgba {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Rgba {
    pub fn white(width: usize, height: usize) -> Rgba {
        Rgba { width, height, pixels: vec![255; width * height * 4] }
    }

    /// Copies `other` with its top left corner at (x, y), clipped.
    /// Fills the rectangle (x, y, w, h), clipped, with an opaque colour.
    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, colour: [u8; 3]) {
        for row in y..(y + h).min(self.height) {
            for col in x..(x + w).min(self.width) {
                let i = (row * self.width + col) * 4;
                self.pixels[i..i + 4].copy_from_slice(&[colour[0], colour[1], colour[2], 255]);
            }
        }
    }

    pub fn paste(&mut self, other: &Rgba, x: usize, y: usize) {
        for row in 0..other.height.min(self.height.saturating_sub(y)) {
            let n = other.width.min(self.width.saturating_sub(x)) * 4;
            let src = row * other.width * 4;
            let dst = ((y + row) * self.width + x) * 4;
            self.pixels[dst..dst + n].copy_from_slice(&other.pixels[src..src + n]);
        }
    }
}

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-Latin1.ttf");

pub(crate) struct Text {
    font: FontRef<'static>,
    scale: PxScale,
}

impl Text {
    pub(crate) fn new(px: f32) -> Text {
        Text {
            font: FontRef::try_from_slice(FONT).expect("the bundled font parses"),
            scale: PxScale::from(px),
        }
    }

    fn glyph(&self, c: char) -> ab_glyph::GlyphId {
        let id = self.font.glyph_id(c);
        if id.0 == 0 {
            self.font.glyph_id('?')
        } else {
            id
        }
    }

    pub(crate) fn width(&self, text: &str) -> f32 {
        let f = self.font.as_scaled(self.scale);
        text.chars().map(|c| f.h_advance(self.glyph(c))).sum()
    }

    pub(crate) fn ascent(&self) -> f32 {
        self.font.as_scaled(self.scale).ascent()
    }

    pub(crate) fn line_height(&self) -> f32 {
        let f = self.font.as_scaled(self.scale);
        (f.ascent() - f.descent() + f.line_gap()).ceil()
    }

    /// Words into lines no wider than `max` (a longer word stands alone).
    pub(crate) fn wrap(&self, text: &str, max: f32) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for paragraph in text.split('\n') {
            let mut line = String::new();
            for word in paragraph.split_whitespace() {
                let candidate = if line.is_empty() { word.to_string() } else { format!("{line} {word}") };
                if self.width(&candidate) <= max || line.is_empty() {
                    line = candidate;
                } else {
                    lines.push(std::mem::replace(&mut line, word.to_string()));
                }
            }
            lines.push(line);
        }
        lines
    }

    /// Draws `line` in black with its baseline at `y`, starting at `x`.
    pub(crate) fn draw(&self, img: &mut Rgba, line: &str, x: f32, y: f32) {
        self.draw_in(img, line, x, y, [0, 0, 0]);
    }

    /// Draws `line` in `colour` with its baseline at `y`, starting at `x`.
    pub(crate) fn draw_in(&self, img: &mut Rgba, line: &str, x: f32, y: f32, colour: [u8; 3]) {
        let f = self.font.as_scaled(self.scale);
        let mut pen = x;
        for c in line.chars() {
            let id = self.glyph(c);
            let glyph = id.with_scale_and_position(self.scale, ab_glyph::point(pen, y));
            pen += f.h_advance(id);
            let Some(outline) = self.font.outline_glyph(glyph) else { continue };
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let px = bounds.min.x as i64 + gx as i64;
                let py = bounds.min.y as i64 + gy as i64;
                if px < 0 || py < 0 || px >= img.width as i64 || py >= img.height as i64 {
                    return;
                }
                let i = (py as usize * img.width + px as usize) * 4;
                let c = coverage.clamp(0.0, 1.0);
                for (channel, ink) in img.pixels[i..i + 3].iter_mut().zip(colour) {
                    *channel = (*channel as f32 * (1.0 - c) + ink as f32 * c).round() as u8;
                }
            });
        }
    }

    /// `lines` centred in the box (x, y, w, h).
    fn draw_centred(&self, img: &mut Rgba, lines: &[String], x: f32, y: f32, w: f32, h: f32) {
        let lh = self.line_height();
        let ascent = self.font.as_scaled(self.scale).ascent();
        let top = y + (h - lh * lines.len() as f32) / 2.0;
        for (i, line) in lines.iter().enumerate() {
            let lx = x + (w - self.width(line)) / 2.0;
            self.draw(img, line, lx.max(x), top + lh * i as f32 + ascent);
        }
    }
}

/// A grid of `xs` columns and `ys` rows of cells (row-major), with the X legends above the
/// columns and the Y legends left of the rows, as A1111 draws them. Cells of different sizes
/// sit in slots as large as the largest.
pub fn draw_grid(cells: &[Rgba], xs: usize, ys: usize, x_legends: &[String], y_legends: &[String]) -> Rgba {
    let cw = cells.iter().map(|c| c.width).max().unwrap_or(1);
    let ch = cells.iter().map(|c| c.height).max().unwrap_or(1);
    let text = Text::new(((cw + ch) as f32 / 25.0).max(12.0));
    let lh = text.line_height();
    let has_x = x_legends.iter().any(|l| !l.is_empty());
    let has_y = y_legends.iter().any(|l| !l.is_empty());
    let pad_left = if has_y { cw * 3 / 4 } else { 0 };
    let x_lines: Vec<Vec<String>> = x_legends.iter().map(|l| text.wrap(l, cw as f32 * 0.95)).collect();
    let y_lines: Vec<Vec<String>> = y_legends.iter().map(|l| text.wrap(l, pad_left as f32 * 0.9)).collect();
    let header_lines = x_lines.iter().map(Vec::len).max().unwrap_or(0);
    let pad_top = if has_x { (lh * header_lines as f32 + lh).ceil() as usize } else { 0 };
    let mut img = Rgba::white(pad_left + cw * xs, pad_top + ch * ys);
    for (i, cell) in cells.iter().enumerate() {
        let (x, y) = (i % xs, i / xs);
        img.paste(cell, pad_left + x * cw, pad_top + y * ch);
    }
    if has_x {
        for (x, lines) in x_lines.iter().enumerate().take(xs) {
            let left = (pad_left + x * cw) as f32;
            text.draw_centred(&mut img, lines, left, 0.0, cw as f32, pad_top as f32);
        }
    }
    if has_y {
        for (y, lines) in y_lines.iter().enumerate().take(ys) {
            let top = (pad_top + y * ch) as f32;
            text.draw_centred(&mut img, lines, 0.0, top, pad_left as f32, ch as f32);
        }
    }
    img
}

/// Several grids side by side, each under its title (the Z legends), as A1111 joins the grids
/// of a Z axis.
pub fn join_grids(grids: &[Rgba], titles: &[String]) -> Rgba {
    let gw = grids.iter().map(|g| g.width).max().unwrap_or(1);
    let gh = grids.iter().map(|g| g.height).max().unwrap_or(1);
    let text = Text::new((gh as f32 / 30.0).max(14.0));
    let lines: Vec<Vec<String>> = titles.iter().map(|t| text.wrap(t, gw as f32 * 0.95)).collect();
    let pad_top =
        (text.line_height() * (lines.iter().map(Vec::len).max().unwrap_or(0) as f32 + 1.0)).ceil() as usize;
    let gap = (gw / 50).max(8);
    let width = gw * grids.len() + gap * grids.len().saturating_sub(1);
    let mut img = Rgba::white(width, pad_top + gh);
    for (i, grid) in grids.iter().enumerate() {
        let left = i * (gw + gap);
        img.paste(grid, left, pad_top);
        if let Some(lines) = lines.get(i) {
            text.draw_centred(&mut img, lines, left as f32, 0.0, gw as f32, pad_top as f32);
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_s_documented_range_examples() {
        // From A1111's wiki (Features → X/Y/Z plot) and the issue's own examples.
        assert_eq!(int_values("1-5").unwrap(), [1, 2, 3, 4, 5]);
        assert_eq!(int_values("1-5 (+2)").unwrap(), [1, 3, 5]);
        assert_eq!(int_values("10-5 (-3)").unwrap(), [10, 7]);
        assert_eq!(int_values("1-10 [5]").unwrap(), [1, 3, 5, 7, 10]);
        assert_eq!(int_values("1-7 (+3)").unwrap(), [1, 4, 7]);
        assert_eq!(float_values("1-3 (+0.5)").unwrap(), [1.0, 1.5, 2.0, 2.5, 3.0]);
        let tenths = float_values("0.0-1.0 [6]").unwrap();
        for (got, want) in tenths.iter().zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]) {
            assert!((got - want).abs() < 1e-12, "{tenths:?}");
        }
        assert_eq!(float_values("1-10 [4]").unwrap(), [1.0, 4.0, 7.0, 10.0]);
        assert_eq!(int_values("3, 8, 1-2").unwrap(), [3, 8, 1, 2]);
        assert_eq!(int_values("-5, 5").unwrap(), [-5, 5]);
        assert!(int_values("1-7 (3)").is_err(), "a step needs its sign, as in A1111");
        assert!(int_values("1.5").is_err());
        assert!(int_values("1-5 (+0)").is_err());
    }

    #[test]
    fn axes_read_their_values_and_name_themselves() {
        let steps = parse_axis("steps:1-7 (+3)").unwrap();
        assert_eq!(steps.values, [AxisValue::Int(1), AxisValue::Int(4), AxisValue::Int(7)]);
        assert_eq!(steps.legend(1), "Steps: 4");
        let cfg = parse_axis("cfg:1-10 [4]").unwrap();
        assert_eq!(cfg.legend(0), "CFG Scale: 1.0");
        let prompt = parse_axis("prompt:cat,owl,\"red, fox\"").unwrap();
        assert_eq!(prompt.values.len(), 3);
        assert_eq!(prompt.legend(2), "red, fox");
        let size = parse_axis("size: 512x512, 768x512").unwrap();
        assert_eq!(size.values[1], AxisValue::Size(768, 512));
        assert_eq!(parse_axis("Sampler:Euler a,DDIM").unwrap().values[0], AxisValue::Text("Euler a".into()));
        assert!(parse_axis("colour:red").unwrap_err().message.contains("names: seed, steps"));
        assert!(parse_axis("steps").is_err());
        assert!(parse_axis("steps:").is_err());
        assert_eq!(AxisValue::Float(0.1 + 0.2).text(), "0.3");
    }

    #[test]
    fn a_grid_places_cells_under_their_legends() {
        let cell = |shade: u8| Rgba { width: 64, height: 48, pixels: vec![shade; 64 * 48 * 4] };
        let cells = vec![cell(10), cell(60), cell(110), cell(160)];
        let labels = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let img = draw_grid(
            &cells,
            2,
            2,
            &labels(&["Steps: 1", "Steps: 4"]),
            &labels(&["CFG Scale: 1", "CFG Scale: 7"]),
        );
        let pad_left = 48;
        assert_eq!(img.width, pad_left + 2 * 64);
        let pad_top = img.height - 2 * 48;
        assert!(pad_top > 10);
        let at = |x: usize, y: usize| img.pixels[(y * img.width + x) * 4];
        assert_eq!(at(pad_left + 64 + 5, pad_top + 48 + 5), 160, "the last cell, bottom right");
        assert_eq!(at(pad_left + 5, pad_top + 5), 10);
        // Legends are drawn: dark pixels above the columns and left of the rows.
        let dark =
            |x0: usize, x1: usize, y0: usize, y1: usize| (y0..y1).any(|y| (x0..x1).any(|x| at(x, y) < 128));
        assert!(dark(pad_left, pad_left + 64, 0, pad_top));
        assert!(dark(pad_left + 64, img.width, 0, pad_top));
        assert!(dark(0, pad_left, pad_top, pad_top + 48));
        assert!(!dark(0, pad_left, 0, pad_top), "the corner stays empty");
        let joined = join_grids(&[img.clone(), img.clone()], &labels(&["Prompt S/R: cat", "owl"]));
        assert!(joined.width > 2 * img.width && joined.height > img.height);
    }
}
