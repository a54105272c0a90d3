//! The contact sheet: one PNG with the brief's title, text and constraints, then every iteration
//! as a row of thumbnails, each framed by its verdict (green kept, red rejected with the reason
//! under it, gold final) with its stars.

use crate::grid::{Rgba, Text};

use super::image::{decode_png, thumbnail};
use super::{BriefError, BriefFile, BriefImage, Verdict};

const THUMB: usize = 192;
const COLUMNS: usize = 6;
const GAP: usize = 16;
const MARGIN: usize = 32;
const FRAME: usize = 4;
pub(crate) const KEPT: [u8; 3] = [31, 136, 61];
pub(crate) const REJECTED: [u8; 3] = [207, 34, 46];
pub(crate) const FINAL: [u8; 3] = [191, 135, 0];
const UNDECIDED: [u8; 3] = [200, 200, 200];
const MUTED: [u8; 3] = [90, 90, 90];

/// `line` cut to fit `max` pixels, with an ellipsis when cut.
fn fit(text: &Text, line: &str, max: f32) -> String {
    if text.width(line) <= max {
        return line.to_string();
    }
    let mut out: String = line.to_string();
    while !out.is_empty() && text.width(&format!("{out}…")) > max {
        out.pop();
    }
    format!("{}…", out.trim_end())
}

fn frame_colour(image: &BriefImage) -> [u8; 3] {
    if image.culling.is_final {
        FINAL
    } else {
        match image.culling.verdict {
            Verdict::Keep => KEPT,
            Verdict::Reject => REJECTED,
            Verdict::Undecided => UNDECIDED,
        }
    }
}

/// What the caption's first line says of an image.
pub(crate) fn status(image: &BriefImage) -> String {
    let mut parts = Vec::new();
    if image.culling.rating > 0 {
        parts.push(format!("{}/5", image.culling.rating));
    }
    parts.push(
        match (image.culling.is_final, image.culling.verdict) {
            (true, _) => "final",
            (false, Verdict::Keep) => "kept",
            (false, Verdict::Reject) => "rejected",
            (false, Verdict::Undecided) => "undecided",
        }
        .to_string(),
    );
    parts.join(" · ")
}

/// The contact sheet of a brief.
pub fn contact_sheet(file: &BriefFile) -> Result<Rgba, BriefError> {
    let title = Text::new(30.0);
    let body = Text::new(16.0);
    let small = Text::new(13.0);
    let iterations = file.iterations();
    let cell_w = THUMB + 2 * FRAME;
    let cell_h = cell_w + (small.line_height() * 2.0).ceil() as usize + 6;
    let columns = iterations.iter().map(|i| i.images.len()).max().unwrap_or(1).clamp(3, COLUMNS);
    let width = 2 * MARGIN + columns * cell_w + (columns - 1) * GAP;
    let inner = (width - 2 * MARGIN) as f32;

    let brief = &file.brief;
    let title_text = if brief.title.trim().is_empty() { "Untitled brief" } else { brief.title.trim() };
    let text_lines: Vec<String> =
        body.wrap(brief.text.trim(), inner).into_iter().filter(|l| !l.is_empty()).take(6).collect();
    let c = &brief.constraints;
    let mut facts = Vec::new();
    if !c.aspect_ratios.is_empty() {
        facts.push(format!("Formats {}", c.aspect_ratios.join(", ")));
    }
    if !c.deadline.trim().is_empty() {
        facts.push(format!("Due {}", c.deadline.trim()));
    }
    if !c.styles.is_empty() {
        facts.push(format!("Styles {}", c.styles.join(", ")));
    }
    if !c.consistency.trim().is_empty() {
        facts.push(format!("Keep consistent: {}", c.consistency.trim()));
    }
    let fact_lines = body.wrap(&facts.join(" · "), inner);
    let palette = c.palette_rgb();
    let lh = body.line_height() as usize;
    let header_h = title.line_height() as usize
        + 8
        + text_lines.len() * lh
        + if facts.is_empty() { 0 } else { fact_lines.len() * lh + 4 }
        + if palette.is_empty() { 0 } else { 28 + 8 }
        + 16;
    let heading_h = lh + small.line_height() as usize + 8;
    let rows_h: usize =
        iterations.iter().map(|it| heading_h + it.images.len().div_ceil(columns) * (cell_h + GAP)).sum();
    let height = MARGIN + header_h + rows_h + MARGIN;
    let mut sheet = Rgba::white(width, height);

    let mut y = MARGIN as f32;
    title.draw(&mut sheet, &fit(&title, title_text, inner), MARGIN as f32, y + title.ascent());
    y += title.line_height() + 8.0;
    for line in &text_lines {
        body.draw_in(&mut sheet, line, MARGIN as f32, y + body.ascent(), [40, 40, 40]);
        y += lh as f32;
    }
    if !facts.is_empty() {
        y += 4.0;
        for line in &fact_lines {
            body.draw_in(&mut sheet, line, MARGIN as f32, y + body.ascent(), MUTED);
            y += lh as f32;
        }
    }
    if !palette.is_empty() {
        y += 8.0;
        for (i, colour) in palette.iter().enumerate() {
            let x = MARGIN + i * 36;
            sheet.fill(x, y as usize, 28, 28, [160, 160, 160]);
            sheet.fill(x + 1, y as usize + 1, 26, 26, *colour);
        }
        y += 28.0;
    }
    y += 16.0;

    for it in &iterations {
        let kept = it.images.iter().filter(|i| i.culling.verdict == Verdict::Keep).count();
        let rejected = it.images.iter().filter(|i| i.culling.verdict == Verdict::Reject).count();
        let n = it.images.len();
        let heading = format!(
            "{} · {n} image{}, {kept} kept, {rejected} rejected",
            it.name,
            if n == 1 { "" } else { "s" }
        );
        body.draw(&mut sheet, &fit(&body, &heading, inner), MARGIN as f32, y + body.ascent());
        y += lh as f32;
        let prompt = it.images.first().map(|i| i.prompt()).unwrap_or("");
        let sub = if it.note.is_empty() { prompt.to_string() } else { format!("{} — {prompt}", it.note) };
        small.draw_in(&mut sheet, &fit(&small, &sub, inner), MARGIN as f32, y + small.ascent(), MUTED);
        y += small.line_height() + 8.0;
        for (n, image) in it.images.iter().enumerate() {
            let (col, row) = (n % columns, n / columns);
            let x = MARGIN + col * (cell_w + GAP);
            let top = y as usize + row * (cell_h + GAP);
            sheet.fill(x, top, cell_w, cell_w, frame_colour(image));
            sheet.fill(x + FRAME, top + FRAME, THUMB, THUMB, [245, 245, 245]);
            let thumb = thumbnail(&decode_png(&image.png, &image.file)?, THUMB);
            let mut flat = thumb.clone();
            // Transparent pixels over white.
            for p in flat.pixels.chunks_exact_mut(4) {
                let a = p[3] as u32;
                for c in &mut p[..3] {
                    *c = ((*c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
                }
                p[3] = 255;
            }
            sheet.paste(
                &flat,
                x + FRAME + (THUMB - thumb.width) / 2,
                top + FRAME + (THUMB - thumb.height) / 2,
            );
            let mut cy = (top + cell_w + 4) as f32;
            let colour = if image.culling.verdict == Verdict::Reject { REJECTED } else { [30, 30, 30] };
            small.draw_in(
                &mut sheet,
                &fit(&small, &status(image), cell_w as f32),
                x as f32,
                cy + small.ascent(),
                colour,
            );
            cy += small.line_height();
            let second = match image.culling.verdict {
                Verdict::Reject if !image.culling.reason.trim().is_empty() => {
                    image.culling.reason.trim().to_string()
                }
                _ if !image.culling.note.trim().is_empty() => image.culling.note.trim().to_string(),
                _ => String::new(),
            };
            if !second.is_empty() {
                small.draw_in(
                    &mut sheet,
                    &fit(&small, &second, cell_w as f32),
                    x as f32,
                    cy + small.ascent(),
                    colour,
                );
            }
        }
        y += (it.images.len().div_ceil(columns) * (cell_h + GAP)) as f32;
    }
    Ok(sheet)
}

#[cfg(test)]
mod tests {
    use super::super::{encode_png, Culling};
    use super::*;

    #[test]
    fn the_sheet_frames_each_image_by_its_verdict() {
        let mut red = Rgba::white(64, 32);
        red.fill(0, 0, 64, 32, [250, 10, 10]);
        let png = encode_png(&red).unwrap();
        let mut file = BriefFile::default();
        file.brief.title = "Autumn".into();
        file.brief.text = "Warm light over the harbour.".into();
        file.brief.constraints.palette = vec!["#0b1f3a".into(), "#d94f30".into()];
        for (i, verdict) in [Verdict::Keep, Verdict::Reject, Verdict::Undecided].into_iter().enumerate() {
            file.images.push(BriefImage {
                iteration: 1.0,
                time: i as f64,
                png: png.clone(),
                culling: Culling { verdict, reason: "too busy".into(), rating: 3, ..Default::default() },
                ..Default::default()
            });
        }
        file.images.push(BriefImage { iteration: 2.0, png, ..Default::default() });
        let sheet = contact_sheet(&file).unwrap();
        assert_eq!(sheet.width, 2 * MARGIN + 3 * (THUMB + 2 * FRAME) + 2 * GAP);
        let at = |x: usize, y: usize| {
            let i = (y * sheet.width + x) * 4;
            [sheet.pixels[i], sheet.pixels[i + 1], sheet.pixels[i + 2]]
        };
        // Find the first frame: the first row with the kept green at the left margin.
        let top = (0..sheet.height).find(|&y| at(MARGIN + 1, y) == KEPT).expect("a kept frame");
        let second = MARGIN + THUMB + 2 * FRAME + GAP;
        assert_eq!(at(second + 1, top + 1), REJECTED);
        let centre = top + FRAME + THUMB / 2;
        assert_eq!(at(MARGIN + FRAME + THUMB / 2, centre), [250, 10, 10], "the thumbnail, centred");
        // Palette swatches under the header.
        assert!((0..top).any(|y| at(MARGIN + 10, y) == [11, 31, 58]));
        // The second iteration's row below the first.
        let below = (top + THUMB..sheet.height).filter(|&y| at(MARGIN + 1, y) == UNDECIDED).count();
        assert!(below >= THUMB, "{below}");
    }
}
