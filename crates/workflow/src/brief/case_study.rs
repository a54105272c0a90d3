//! The case study: one self-contained HTML page (styles inline, images as data URIs, no script,
//! nothing fetched) that shows a client the process — the brief and its constraints, each
//! iteration with its thumbnails, prompt, settings and scores, the rejected directions with
//! their reasons, and the finals at full size.

use std::fmt::Write;

use super::image::{decode_png, encode_png, thumbnail};
use super::sheet::status;
use super::{score_label, score_text, BriefError, BriefFile, BriefImage, Verdict};

const THUMB: usize = 320;

/// Text safe inside HTML elements and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Milliseconds since the epoch as `YYYY-MM-DD` (UTC).
pub(crate) fn date(ms: f64) -> String {
    let days = (ms / 86_400_000.0).floor() as i64;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}")
}

fn data_uri(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64(png))
}

fn thumb_uri(image: &BriefImage) -> Result<String, BriefError> {
    let decoded = decode_png(&image.png, &image.file)?;
    if decoded.width.max(decoded.height) <= THUMB {
        return Ok(data_uri(&image.png));
    }
    Ok(data_uri(&encode_png(&thumbnail(&decoded, THUMB))?))
}

fn verdict_class(image: &BriefImage) -> &'static str {
    match (image.culling.is_final, image.culling.verdict) {
        (true, _) => "final",
        (false, Verdict::Keep) => "kept",
        (false, Verdict::Reject) => "rejected",
        (false, Verdict::Undecided) => "undecided",
    }
}

fn scores_html(image: &BriefImage) -> String {
    if image.scores.is_empty() {
        return String::new();
    }
    let items: Vec<String> = super::ordered_scores(&image.scores)
        .into_iter()
        .map(|(k, v)| {
            format!("<span>{} <b>{}</b></span>", escape(score_label(k).0), escape(&score_text(k, v)))
        })
        .collect();
    format!("<p class=\"scores\">{}</p>", items.join(" "))
}

const STYLE: &str = "
:root{color-scheme:light;--ink:#1d1d1f;--muted:#6e6e73;--kept:#1f883d;--rejected:#cf222e;--final:#bf8700;--line:#e5e5ea}
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:var(--ink);background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:48px 32px}h1{font-size:2.4rem;margin:0 0 4px}h2{margin:48px 0 12px;border-bottom:1px solid var(--line);padding-bottom:6px}
h3{margin:28px 0 4px}.muted{color:var(--muted)}.small{font-size:.85rem}.brief{white-space:pre-wrap;font-size:1.1rem;max-width:70ch}
dl{display:grid;grid-template-columns:max-content 1fr;gap:6px 20px}dt{color:var(--muted)}dd{margin:0}
.swatch{display:inline-flex;align-items:center;gap:6px;margin-right:14px}.swatch i{display:inline-block;width:22px;height:22px;border-radius:4px;border:1px solid #0002}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:18px}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;overflow:hidden}figure img{display:block;width:100%;height:auto;background:#eee}
figure.kept{border:3px solid var(--kept)}figure.rejected{border:3px solid var(--rejected)}figure.final{border:3px solid var(--final)}
figcaption{padding:8px 10px;font-size:.85rem}.badge{font-weight:600;text-transform:uppercase;font-size:.75rem;letter-spacing:.04em}
.kept .badge{color:var(--kept)}.rejected .badge{color:var(--rejected)}.final .badge{color:var(--final)}.undecided .badge{color:var(--muted)}
.reason{color:var(--rejected)}.scores span{margin-right:10px;white-space:nowrap}.prompt{font-style:italic}
code{font-size:.8rem;color:var(--muted);word-break:break-word}.finals figure{margin-bottom:32px;width:fit-content;max-width:100%}.finals img{max-width:100%;width:auto}
footer{margin-top:64px;color:var(--muted);font-size:.85rem}
";

/// The case study of a brief as one HTML page.
pub fn case_study_html(file: &BriefFile) -> Result<String, BriefError> {
    let brief = &file.brief;
    let title = if brief.title.trim().is_empty() { "Untitled brief" } else { brief.title.trim() };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{} — case study</title><style>{STYLE}</style></head><body><main>\n",
        escape(title)
    );
    let images = file.images.len();
    let _ = write!(
        h,
        "<header><p class=\"muted\">Case study{}</p><h1>{}</h1><p class=\"muted\">{} iterations · {images} images · {} kept · {} rejected</p></header>",
        if brief.created > 0.0 { format!(" · brief of {}", date(brief.created)) } else { String::new() },
        escape(title),
        file.iterations().len(),
        file.images.iter().filter(|i| i.culling.verdict == Verdict::Keep).count(),
        file.rejected().len(),
    );
    h.push_str("<section id=\"brief\"><h2>The brief</h2>");
    if brief.text.trim().is_empty() {
        h.push_str("<p class=\"muted\">No brief text.</p>");
    } else {
        let _ = write!(h, "<p class=\"brief\">{}</p>", escape(brief.text.trim()));
    }
    let c = &brief.constraints;
    if !c.is_empty() {
        h.push_str("<h3>Constraints</h3><dl id=\"constraints\">");
        if !c.palette.is_empty() {
            let swatches: Vec<String> = c
                .palette
                .iter()
                .map(|hex| {
                    format!("<span class=\"swatch\"><i style=\"background:{0}\"></i>{0}</span>", escape(hex))
                })
                .collect();
            let _ = write!(h, "<dt>Palette</dt><dd>{}</dd>", swatches.join(""));
        }
        if !c.aspect_ratios.is_empty() {
            let _ = write!(h, "<dt>Formats</dt><dd>{}</dd>", escape(&c.aspect_ratios.join(", ")));
        }
        if !c.deadline.trim().is_empty() {
            let _ = write!(h, "<dt>Deadline</dt><dd>{}</dd>", escape(c.deadline.trim()));
        }
        if !c.consistency.trim().is_empty() {
            let _ = write!(h, "<dt>Consistency</dt><dd>{}</dd>", escape(c.consistency.trim()));
        }
        if !c.styles.is_empty() {
            let _ = write!(h, "<dt>Styles</dt><dd>{}</dd>", escape(&c.styles.join(", ")));
        }
        h.push_str("</dl>");
    }
    h.push_str("</section>\n<section id=\"iterations\"><h2>Iterations</h2>");
    for it in file.iterations() {
        let _ = write!(
            h,
            "<article class=\"iteration\" data-iteration=\"{}\"><h3>{}</h3>",
            it.number,
            escape(&it.name)
        );
        if !it.note.is_empty() {
            let _ = write!(h, "<p>{}</p>", escape(&it.note));
        }
        // The prompt and settings once when the whole run shares them.
        let first = it.images[0];
        let shared = it.images.iter().all(|i| i.prompt() == first.prompt());
        if shared {
            let _ = write!(h, "<p class=\"prompt\">{}</p>", escape(first.prompt()));
            if let Some(n) = first.negative() {
                let _ = write!(h, "<p class=\"small muted\">Negative: {}</p>", escape(n));
            }
        }
        h.push_str("<div class=\"grid\">");
        for image in &it.images {
            let _ = write!(
                h,
                "<figure class=\"{}\"><img src=\"{}\" alt=\"{}\" width=\"{}\" height=\"{}\"><figcaption><span class=\"badge\">{}</span>",
                verdict_class(image),
                thumb_uri(image)?,
                escape(image.prompt()),
                image.width,
                image.height,
                escape(&status(image)),
            );
            if image.culling.verdict == Verdict::Reject && !image.culling.reason.trim().is_empty() {
                let _ =
                    write!(h, "<p class=\"reason\">Rejected: {}</p>", escape(image.culling.reason.trim()));
            } else if !image.culling.reason.trim().is_empty() {
                let _ = write!(h, "<p>{}</p>", escape(image.culling.reason.trim()));
            }
            if !image.culling.note.trim().is_empty() {
                let _ = write!(h, "<p>{}</p>", escape(image.culling.note.trim()));
            }
            if !shared {
                let _ = write!(h, "<p class=\"prompt\">{}</p>", escape(image.prompt()));
            }
            h.push_str(&scores_html(image));
            let _ = write!(h, "<code>{}</code></figcaption></figure>", escape(image.settings()));
        }
        h.push_str("</div></article>");
    }
    h.push_str("</section>\n<section id=\"rejected\"><h2>Rejected directions</h2>");
    let rejected = file.rejected();
    if rejected.is_empty() {
        h.push_str("<p class=\"muted\">None rejected.</p>");
    } else {
        h.push_str("<div class=\"grid\">");
        let iterations = file.iterations();
        for image in rejected {
            let name = iterations
                .iter()
                .find(|i| i.id == image.iteration)
                .map(|i| i.name.clone())
                .unwrap_or_default();
            let reason = if image.culling.reason.trim().is_empty() {
                "no reason given"
            } else {
                image.culling.reason.trim()
            };
            let _ = write!(
                h,
                "<figure class=\"rejected\"><img src=\"{}\" alt=\"{}\"><figcaption><span class=\"badge\">{}</span><p class=\"reason\">{}</p><p class=\"prompt\">{}</p></figcaption></figure>",
                thumb_uri(image)?,
                escape(image.prompt()),
                escape(&name),
                escape(reason),
                escape(image.prompt()),
            );
        }
        h.push_str("</div>");
    }
    h.push_str("</section>\n<section id=\"finals\" class=\"finals\"><h2>Final</h2>");
    let finals = file.finals();
    if finals.is_empty() {
        h.push_str("<p class=\"muted\">No final chosen yet.</p>");
    }
    for image in finals {
        let _ = write!(
            h,
            "<figure class=\"final\"><img src=\"{}\" alt=\"{}\" width=\"{}\" height=\"{}\"><figcaption><p class=\"prompt\">{}</p>{}<code>{}</code></figcaption></figure>",
            data_uri(&image.png),
            escape(image.prompt()),
            image.width,
            image.height,
            escape(image.prompt()),
            scores_html(image),
            escape(image.settings()),
        );
    }
    h.push_str("</section>\n<footer>Made with Darkroom: every image generated and kept on the artist's own device.</footer></main></body></html>\n");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::super::{encode_png, Culling};
    use super::*;
    use crate::grid::Rgba;

    #[test]
    fn helpers() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[255, 254, 253]), "//79");
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(date(0.0), "1970-01-01");
        assert_eq!(date(1_796_083_200_000.0), "2026-12-01");
        assert_eq!(date(951_782_400_000.0), "2000-02-29");
    }

    #[test]
    fn the_page_shows_the_process_and_nothing_outside_it() {
        let png = encode_png(&Rgba::white(500, 400)).unwrap();
        let mut file = BriefFile::default();
        file.brief.title = "Harbour <at> dusk".into();
        file.brief.text = "Three key visuals.\nWarm, quiet.".into();
        file.brief.constraints.palette = vec!["#0b1f3a".into()];
        file.brief.constraints.deadline = "2026-12-20".into();
        let infotext =
            "a harbour at dusk\nNegative prompt: people\nSteps: 4, Sampler: Euler a, Seed: 1".to_string();
        for (i, (verdict, reason)) in
            [(Verdict::Reject, "too saturated <red>"), (Verdict::Keep, ""), (Verdict::Undecided, "")]
                .into_iter()
                .enumerate()
        {
            file.images.push(BriefImage {
                iteration: 7.0,
                time: i as f64,
                width: 500,
                height: 400,
                infotext: infotext.clone(),
                png: png.clone(),
                culling: Culling { verdict, reason: reason.into(), rating: 2, ..Default::default() },
                scores: [("clip_score".to_string(), 31.25)].into_iter().collect(),
                ..Default::default()
            });
        }
        let html = case_study_html(&file).unwrap();
        assert!(html.contains("<h1>Harbour &lt;at&gt; dusk</h1>"));
        assert!(html.contains("Rejected: too saturated &lt;red&gt;"));
        assert!(html.contains("id=\"rejected\""));
        assert!(html.contains("#0b1f3a") && html.contains("2026-12-20"));
        assert!(html.contains("CLIP score <b>31.2</b>") || html.contains("CLIP score <b>31.3</b>"));
        assert!(html.contains("Steps: 4, Sampler: Euler a, Seed: 1"));
        // The final (the kept one, none marked) at full size: the original PNG itself.
        let finals = &html[html.find("id=\"finals\"").unwrap()..];
        assert_eq!(finals.matches("<figure").count(), 1);
        assert!(finals.contains(&base64(&png)));
        // Self-contained: nothing fetched, no script.
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"));
    }
}
