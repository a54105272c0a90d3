//! Briefs: a client's brief as a project — its text and constraints, the images made under it
//! grouped as iterations, and the culling of each image (stars, keep or reject with a reason, a
//! note, the finals). The app keeps briefs in IndexedDB; a brief moves between machines as one
//! file (`*.darkroom-brief.zip`: `brief.json` and the PNGs, which carry their own parameters), and
//! becomes a case study: a self-contained HTML page ([`case_study_html`]) and a contact sheet
//! ([`contact_sheet`]).

mod case_study;
mod file;
mod image;
mod sheet;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use case_study::case_study_html;
pub use file::{from_zip, to_zip, INDEX};
pub use image::{decode_png, encode_png, thumbnail};
pub use sheet::contact_sheet;

/// The index's `format`.
pub const FORMAT: &str = "darkroom-brief";
/// The newest index version this build reads and the one it writes.
pub const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BriefError {
    #[error("not a brief file (a zip with brief.json): {0}")]
    NotABrief(String),
    #[error("brief.json: {0}")]
    Index(String),
    #[error("the brief names {0}, which the file does not hold")]
    Missing(String),
    #[error("{0} is not a PNG image: {1}")]
    Image(String, String),
    #[error("the brief file is too large: {0}")]
    TooLarge(String),
    #[error("writing the brief file failed: {0}")]
    Write(String),
}

/// What the work must respect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Constraints {
    /// The brand's colours, `#rrggbb`.
    pub palette: Vec<String>,
    /// The formats asked for, `16:9`, `1:1`…
    pub aspect_ratios: Vec<String>,
    /// When it is due (as the user wrote it; the app's date field writes `YYYY-MM-DD`).
    pub deadline: String,
    /// What must stay the same across the set (a character, a product, a lighting).
    pub consistency: String,
    /// Styles or presets the work uses, by name.
    pub styles: Vec<String>,
}

impl Constraints {
    /// The palette's colours that parse (`#rrggbb` or `#rgb`).
    pub fn palette_rgb(&self) -> Vec<[u8; 3]> {
        self.palette.iter().filter_map(|c| parse_hex(c)).collect()
    }

    pub fn is_empty(&self) -> bool {
        self == &Constraints::default()
    }
}

/// A colour written `#rrggbb`, `rrggbb` or `#rgb`.
pub fn parse_hex(text: &str) -> Option<[u8; 3]> {
    let hex = text.trim().trim_start_matches('#');
    let expanded: String = match hex.len() {
        3 => hex.chars().flat_map(|c| [c, c]).collect(),
        6 => hex.to_string(),
        _ => return None,
    };
    if !expanded.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&expanded[i..i + 2], 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

/// An iteration's name and note (an iteration is the images of one run made under the brief,
/// known by the run's start time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IterationNote {
    pub id: f64,
    pub name: String,
    pub note: String,
}

/// A brief.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Brief {
    /// Unique on the device (`brief-<ms>-<random>`); an imported brief keeps its id.
    pub id: String,
    pub title: String,
    pub text: String,
    /// Milliseconds since the epoch.
    pub created: f64,
    pub constraints: Constraints,
    pub iterations: Vec<IterationNote>,
}

impl Brief {
    /// The note of iteration `id`, if one was written.
    pub fn iteration_note(&self, id: f64) -> Option<&IterationNote> {
        self.iterations.iter().find(|n| n.id == id)
    }

    /// Sets iteration `id`'s name and note (an empty pair removes the record).
    pub fn set_iteration_note(&mut self, id: f64, name: &str, note: &str) {
        self.iterations.retain(|n| n.id != id);
        if !name.trim().is_empty() || !note.trim().is_empty() {
            self.iterations.push(IterationNote { id, name: name.trim().into(), note: note.trim().into() });
            self.iterations.sort_by(|a, b| a.id.total_cmp(&b.id));
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    #[default]
    Undecided,
    Keep,
    Reject,
}

/// The user's judgment of one image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Culling {
    /// 0 unrated, else 1–5 stars.
    pub rating: u8,
    pub verdict: Verdict,
    /// Why it was rejected (or kept).
    pub reason: String,
    pub note: String,
    /// One of the finals shown to the client.
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl Culling {
    pub fn is_default(&self) -> bool {
        self == &Culling::default()
    }
}

/// One image of a brief.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BriefImage {
    /// Its PNG's path in the brief file.
    pub file: String,
    /// The iteration (run) it belongs to: the run's start time.
    pub iteration: f64,
    /// When it was made, milliseconds since the epoch.
    pub time: f64,
    pub model: String,
    pub width: usize,
    pub height: usize,
    /// A1111's parameters text (also in the PNG).
    pub infotext: String,
    #[serde(flatten)]
    pub culling: Culling,
    /// Scores by name (`clip_score`, `aesthetic`, `sharpness`, `clipped_highlights`,
    /// `clipped_shadows`, `palette_delta_e`).
    pub scores: BTreeMap<String, f64>,
    #[serde(skip)]
    pub png: Vec<u8>,
}

impl BriefImage {
    /// The prompt: the parameters' lines before "Negative prompt:" / the settings line.
    pub fn prompt(&self) -> &str {
        prompt_of(&self.infotext)
    }

    /// The negative prompt, if any.
    pub fn negative(&self) -> Option<&str> {
        let rest = self.infotext.split_once("\nNegative prompt: ")?.1;
        Some(rest.rsplit_once("\nSteps: ").map_or(rest, |(n, _)| n).trim())
    }

    /// The settings line (`Steps: …, Sampler: …`).
    pub fn settings(&self) -> &str {
        self.infotext.rfind("\nSteps: ").map_or("", |i| self.infotext[i + 1..].trim_end())
    }
}

/// The prompt of an A1111 parameters text.
pub fn prompt_of(infotext: &str) -> &str {
    infotext.split("\nNegative prompt:").next().unwrap_or("").split("\nSteps:").next().unwrap_or("").trim()
}

/// A brief with its images: what a brief file holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BriefFile {
    pub brief: Brief,
    pub images: Vec<BriefImage>,
}

/// The images of one iteration, in the order they were made.
#[derive(Debug, Clone, PartialEq)]
pub struct Iteration<'a> {
    pub id: f64,
    /// 1 for the first iteration of the brief.
    pub number: usize,
    /// The name given, else "Iteration N".
    pub name: String,
    pub note: String,
    pub images: Vec<&'a BriefImage>,
}

impl BriefFile {
    /// The iterations, oldest first.
    pub fn iterations(&self) -> Vec<Iteration<'_>> {
        let mut ids: Vec<f64> = self.images.iter().map(|i| i.iteration).collect();
        ids.sort_by(f64::total_cmp);
        ids.dedup();
        ids.iter()
            .enumerate()
            .map(|(n, &id)| {
                let note = self.brief.iteration_note(id);
                let mut images: Vec<&BriefImage> = self.images.iter().filter(|i| i.iteration == id).collect();
                images.sort_by(|a, b| a.time.total_cmp(&b.time));
                Iteration {
                    id,
                    number: n + 1,
                    name: note
                        .map(|n| n.name.clone())
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| format!("Iteration {}", n + 1)),
                    note: note.map(|n| n.note.clone()).unwrap_or_default(),
                    images,
                }
            })
            .collect()
    }

    /// The finals: the images marked final, else (none marked) the kept ones.
    pub fn finals(&self) -> Vec<&BriefImage> {
        let marked: Vec<&BriefImage> = self.images.iter().filter(|i| i.culling.is_final).collect();
        if !marked.is_empty() {
            return marked;
        }
        self.images.iter().filter(|i| i.culling.verdict == Verdict::Keep).collect()
    }

    pub fn rejected(&self) -> Vec<&BriefImage> {
        self.images.iter().filter(|i| i.culling.verdict == Verdict::Reject).collect()
    }
}

/// A score's label and whether more is better.
pub fn score_label(key: &str) -> (&str, bool) {
    match key {
        "clip_score" => ("CLIP score", true),
        "aesthetic" => ("Aesthetic", true),
        "sharpness" => ("Sharpness", true),
        "clipped_highlights" => ("Clipped highlights", false),
        "clipped_shadows" => ("Clipped shadows", false),
        "palette_delta_e" => ("Palette ΔE", false),
        other => (other, true),
    }
}

/// The scores in the order they are shown: the model scores, the palette, then the rest.
pub const SCORE_ORDER: [&str; 6] =
    ["clip_score", "aesthetic", "palette_delta_e", "sharpness", "clipped_highlights", "clipped_shadows"];

/// An image's scores in [`SCORE_ORDER`], unknown names after, alphabetically.
pub fn ordered_scores(scores: &BTreeMap<String, f64>) -> Vec<(&str, f64)> {
    let rank = |k: &str| SCORE_ORDER.iter().position(|o| *o == k).unwrap_or(SCORE_ORDER.len());
    let mut out: Vec<(&str, f64)> = scores.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    out.sort_by_key(|(k, _)| rank(k));
    out
}

/// A score as shown: shares as percentages, the rest with a sensible precision.
pub fn score_text(key: &str, value: f64) -> String {
    match key {
        "clipped_highlights" | "clipped_shadows" => format!("{:.1}%", value * 100.0),
        "sharpness" => format!("{value:.0}"),
        "aesthetic" => format!("{value:.2}"),
        _ => format!("{value:.1}"),
    }
}

/// The indices of the `n` best of `values` by score `key` (`None`s last, never chosen), best
/// first; ties keep their order.
pub fn best(values: &[Option<f64>], key: &str, n: usize) -> Vec<usize> {
    let higher = score_label(key).1;
    let mut order: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_some()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (values[a].unwrap_or(0.0), values[b].unwrap_or(0.0));
        if higher {
            y.total_cmp(&x)
        } else {
            x.total_cmp(&y)
        }
    });
    order.truncate(n);
    order
}

/// The indices of `values` worse than `threshold` by score `key` (below it when more is better,
/// above it when less is).
pub fn worse_than(values: &[Option<f64>], key: &str, threshold: f64) -> Vec<usize> {
    let higher = score_label(key).1;
    (0..values.len())
        .filter(|&i| values[i].is_some_and(|v| if higher { v < threshold } else { v > threshold }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(iteration: f64, time: f64, verdict: Verdict) -> BriefImage {
        BriefImage {
            iteration,
            time,
            infotext: "a red fox\nNegative prompt: blurry\nSteps: 4, Sampler: Euler a, Seed: 7".into(),
            culling: Culling { verdict, ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn iterations_group_by_run_and_take_their_names() {
        let mut file = BriefFile {
            images: vec![
                image(20.0, 3.0, Verdict::Keep),
                image(10.0, 2.0, Verdict::Reject),
                image(10.0, 1.0, Verdict::Undecided),
            ],
            ..Default::default()
        };
        file.brief.set_iteration_note(20.0, "Warmer light", "the client liked dusk");
        let its = file.iterations();
        assert_eq!(its.len(), 2);
        assert_eq!((its[0].number, its[0].name.as_str(), its[0].images.len()), (1, "Iteration 1", 2));
        assert_eq!(its[0].images[0].time, 1.0, "oldest first");
        assert_eq!((its[1].name.as_str(), its[1].note.as_str()), ("Warmer light", "the client liked dusk"));
        assert_eq!(file.finals().len(), 1, "no finals marked: the kept ones");
        file.images[1].culling.is_final = true;
        assert_eq!(file.finals()[0].time, 2.0);
        assert_eq!(file.rejected().len(), 1);
        file.brief.set_iteration_note(20.0, " ", "");
        assert!(file.brief.iterations.is_empty());
    }

    #[test]
    fn parameters_split_into_prompt_negative_and_settings() {
        let i = image(1.0, 1.0, Verdict::Keep);
        assert_eq!(i.prompt(), "a red fox");
        assert_eq!(i.negative(), Some("blurry"));
        assert_eq!(i.settings(), "Steps: 4, Sampler: Euler a, Seed: 7");
        let plain = BriefImage { infotext: "a cat\nSteps: 2".into(), ..Default::default() };
        assert_eq!((plain.prompt(), plain.negative()), ("a cat", None));
    }

    #[test]
    fn best_and_worse_follow_each_score_s_direction() {
        let v = [Some(3.0), None, Some(9.0), Some(5.0)];
        assert_eq!(best(&v, "clip_score", 2), [2, 3]);
        assert_eq!(best(&v, "palette_delta_e", 2), [0, 3]);
        assert_eq!(best(&v, "clip_score", 10), [2, 3, 0]);
        assert_eq!(worse_than(&v, "aesthetic", 5.0), [0]);
        assert_eq!(worse_than(&v, "palette_delta_e", 5.0), [2]);
    }

    #[test]
    fn colours_parse() {
        assert_eq!(parse_hex("#F00"), Some([255, 0, 0]));
        assert_eq!(parse_hex(" 0b1f3a "), Some([11, 31, 58]));
        assert_eq!(parse_hex("#12345"), None);
        let c = Constraints { palette: vec!["#000".into(), "nope".into()], ..Default::default() };
        assert_eq!(c.palette_rgb(), [[0, 0, 0]]);
    }
}
