//! `darkroom brief`: briefs as files (`*.darkroom-brief.zip`, the same file the app exports and
//! imports). `export` turns one into a case study (an HTML page and a contact-sheet PNG); `new`
//! starts one; `add` puts images into it as a new iteration with their model-free scores (the
//! palette's ΔE from the brief's own palette); `mark` culls an image; `show` prints the board.

use std::path::{Path, PathBuf};

use darkroom_pipeline::metadata::read_parameters;
use darkroom_pipeline::scores::Measures;
use darkroom_pipeline::Image;
use darkroom_workflow::brief::{self, Brief, BriefFile, BriefImage, Constraints, Verdict};

use crate::failure::{usage, Failure};

#[derive(clap::Args)]
pub struct BriefArgs {
    #[command(subcommand)]
    command: BriefCommand,
}

#[derive(clap::Subcommand)]
enum BriefCommand {
    /// A brief file as a case study: a self-contained HTML page and/or a contact-sheet PNG.
    Export {
        /// The brief file (exported by the app, or made with `darkroom brief new`).
        file: PathBuf,
        #[arg(long, value_name = "OUT.html")]
        html: Option<PathBuf>,
        #[arg(long, value_name = "OUT.png")]
        sheet: Option<PathBuf>,
    },
    /// Start a brief file.
    New {
        file: PathBuf,
        #[arg(long)]
        title: String,
        /// The brief's text.
        #[arg(long, default_value = "")]
        text: String,
        /// The brand's colours, comma-separated `#rrggbb`.
        #[arg(long)]
        palette: Option<String>,
        /// Formats asked for, comma-separated (`16:9,1:1`).
        #[arg(long)]
        aspect: Option<String>,
        #[arg(long, default_value = "")]
        deadline: String,
        /// What must stay the same across the set.
        #[arg(long, default_value = "")]
        consistency: String,
        /// Styles or presets the work uses, comma-separated.
        #[arg(long)]
        styles: Option<String>,
    },
    /// Add PNGs to a brief file as one new iteration, scored.
    Add {
        file: PathBuf,
        /// The iteration's name.
        #[arg(long)]
        name: Option<String>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Print a brief's board: its iterations, their images and verdicts.
    Show { file: PathBuf },
    /// Cull an image of a brief file: stars, keep or reject with a reason, a note, final.
    Mark {
        file: PathBuf,
        /// The image: its number as `show` prints it (`images/0003.png` or `3`).
        image: String,
        /// Stars, 1–5 (0 clears).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=5))]
        rating: Option<u8>,
        #[arg(long, conflicts_with = "reject")]
        keep: bool,
        /// Reject it, for this reason.
        #[arg(long, value_name = "REASON")]
        reject: Option<String>,
        /// One of the finals shown to the client.
        #[arg(long)]
        r#final: bool,
        #[arg(long)]
        note: Option<String>,
    },
}

fn list(text: &Option<String>) -> Vec<String> {
    text.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn read(path: &Path) -> Result<BriefFile, Failure> {
    let bytes = std::fs::read(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    brief::from_zip(&bytes).map_err(|e| usage(format!("{}: {e}", path.display())))
}

/// Writes beside the target, then renames: a failed write leaves the old file.
fn write(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let fail = |e: std::io::Error| Failure {
        message: format!("cannot write {}: {e}", path.display()),
        usage: false,
    };
    std::fs::write(&part, bytes).map_err(fail)?;
    std::fs::rename(&part, path).map_err(fail)
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0)
}

/// The model-free scores as a brief keeps them.
pub fn scores_of(image: &Image, palette: &[[u8; 3]]) -> std::collections::BTreeMap<String, f64> {
    let m = Measures::of(image, palette);
    let mut scores: std::collections::BTreeMap<String, f64> = [
        ("sharpness".to_string(), m.sharpness),
        ("clipped_highlights".to_string(), m.clipped_highlights),
        ("clipped_shadows".to_string(), m.clipped_shadows),
    ]
    .into_iter()
    .collect();
    if let Some(d) = m.palette_delta_e {
        scores.insert("palette_delta_e".into(), d);
    }
    scores
}

pub fn run(args: BriefArgs) -> Result<(), Failure> {
    match args.command {
        BriefCommand::Export { file, html, sheet } => {
            if html.is_none() && sheet.is_none() {
                return Err(usage(
                    "brief export: say what to write: --html OUT.html and/or --sheet OUT.png".into(),
                ));
            }
            let brief = read(&file)?;
            if let Some(out) = html {
                let page =
                    brief::case_study_html(&brief).map_err(|e| usage(format!("{}: {e}", file.display())))?;
                write(&out, page.as_bytes())?;
                println!("{}", out.display());
            }
            if let Some(out) = sheet {
                let image =
                    brief::contact_sheet(&brief).map_err(|e| usage(format!("{}: {e}", file.display())))?;
                let png = brief::encode_png(&image).map_err(|e| usage(e.to_string()))?;
                write(&out, &png)?;
                println!("{}", out.display());
            }
            Ok(())
        }
        BriefCommand::New { file, title, text, palette, aspect, deadline, consistency, styles } => {
            if file.exists() {
                return Err(usage(format!("{} exists: `darkroom brief add` adds to it", file.display())));
            }
            let colours = list(&palette);
            if let Some(bad) = colours.iter().find(|c| brief::parse_hex(c).is_none()) {
                return Err(usage(format!("--palette: {bad:?} is not a colour (write #rrggbb)")));
            }
            let created = now_ms();
            let new = BriefFile {
                brief: Brief {
                    id: format!("brief-{created}"),
                    title,
                    text,
                    created,
                    constraints: Constraints {
                        palette: colours,
                        aspect_ratios: list(&aspect),
                        deadline,
                        consistency,
                        styles: list(&styles),
                    },
                    iterations: Vec::new(),
                },
                images: Vec::new(),
            };
            write(&file, &brief::to_zip(&new).map_err(|e| usage(e.to_string()))?)?;
            println!("{}", file.display());
            Ok(())
        }
        BriefCommand::Add { file, name, images } => {
            let mut board = read(&file)?;
            let palette = board.brief.constraints.palette_rgb();
            let iteration = now_ms().max(board.images.iter().map(|i| i.iteration + 1.0).fold(0.0, f64::max));
            for (n, path) in images.iter().enumerate() {
                let png =
                    std::fs::read(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
                let image = Image::from_png(&png).map_err(|e| usage(format!("{}: {e}", path.display())))?;
                board.images.push(BriefImage {
                    file: path.display().to_string(),
                    iteration,
                    time: iteration + n as f64,
                    model: String::new(),
                    width: image.width,
                    height: image.height,
                    infotext: read_parameters(&png).unwrap_or_default(),
                    scores: scores_of(&image, &palette),
                    png,
                    ..Default::default()
                });
            }
            if let Some(name) = name {
                board.brief.set_iteration_note(iteration, &name, "");
            }
            write(&file, &brief::to_zip(&board).map_err(|e| usage(e.to_string()))?)?;
            println!(
                "{}: {} images in {} iterations",
                file.display(),
                board.images.len(),
                board.iterations().len()
            );
            Ok(())
        }
        BriefCommand::Mark { file, image, rating, keep, reject, r#final, note } => {
            let mut board = read(&file)?;
            let index = match image.trim().parse::<usize>() {
                Ok(n) if n >= 1 && n <= board.images.len() => n - 1,
                Ok(n) => {
                    return Err(usage(format!("image {n}: the brief has images 1 to {}", board.images.len())))
                }
                Err(_) => board.images.iter().position(|i| i.file == image.trim()).ok_or_else(|| {
                    usage(format!("the brief has no image {image:?} (see `darkroom brief show`)"))
                })?,
            };
            let culling = &mut board.images[index].culling;
            if let Some(r) = rating {
                culling.rating = r;
            }
            if keep {
                culling.verdict = Verdict::Keep;
                culling.reason.clear();
            }
            if let Some(reason) = reject {
                culling.verdict = Verdict::Reject;
                culling.reason = reason.trim().to_string();
                culling.is_final = false;
            }
            if r#final {
                culling.is_final = true;
                culling.verdict = Verdict::Keep;
            }
            if let Some(note) = note {
                culling.note = note.trim().to_string();
            }
            write(&file, &brief::to_zip(&board).map_err(|e| usage(e.to_string()))?)?;
            Ok(())
        }
        BriefCommand::Show { file } => {
            let board = read(&file)?;
            println!("{}", if board.brief.title.is_empty() { "Untitled brief" } else { &board.brief.title });
            for it in board.iterations() {
                println!(
                    "{} ({} images){}",
                    it.name,
                    it.images.len(),
                    if it.note.is_empty() { String::new() } else { format!(": {}", it.note) }
                );
                for image in it.images {
                    let c = &image.culling;
                    let verdict = match c.verdict {
                        Verdict::Keep => "kept",
                        Verdict::Reject => "rejected",
                        Verdict::Undecided => "undecided",
                    };
                    let stars = if c.rating > 0 { format!(" {}/5", c.rating) } else { String::new() };
                    let reason = if c.reason.is_empty() { String::new() } else { format!(": {}", c.reason) };
                    let fin = if c.is_final { " final" } else { "" };
                    println!("  {} {verdict}{stars}{fin}{reason} — {}", image.file, image.prompt());
                }
            }
            Ok(())
        }
    }
}
