//! Prompts files: what `darkroom batch` runs.
//!
//! A1111's "prompts from file or textbox" format, line by line (blank lines skipped, each line
//! trimmed):
//! - a plain line is a prompt;
//! - a line with `--` is read as flags, split as a POSIX shell would (quotes, backslashes):
//!   `--prompt "a cat" --negative_prompt blurry --steps 30 --cfg_scale 6.5 --seed 7 --width 768
//!   --height 512 --sampler_name "DPM++ 2M Karras" --batch_size 2 --n_iter 3 --styles "Ink"
//!   --denoising_strength 0.6`; `--prompt` and `--negative_prompt` take every word up to the next
//!   flag. A line that does not read as flags (an unknown flag, a value of the wrong type, an
//!   unclosed quote) is a prompt as it stands, as in A1111, with a warning.
//! - a line starting with `{` is a JSON recipe: any of the recipe's fields (`prompt`,
//!   `negative_prompt`, `seed`, `steps`, `sampler`, `cfg_scale`, `width`, `height`,
//!   `batch_size`, `batch_count`, `strength`, `model`, `styles`).
//!
//! Each line becomes a [`Job`]: the recipe fields it sets, by the recipe's names, over the
//! settings the command line gives.

use serde_json::{Map, Value};

/// One line of a prompts file.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The line's number in the file (from 1).
    pub line: usize,
    /// Recipe fields this line sets (`sampler` as written: A1111's name or ours).
    pub fields: Map<String, Value>,
    /// Why the line was read differently from how it looks, or what of it was left out.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("--shard takes K/N with 1 <= K <= N (shard K of N), got {0:?}")]
    Shard(String),
}

/// The fields a JSON line may set.
pub const RECIPE_FIELDS: [&str; 13] = [
    "model",
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "sampler",
    "cfg_scale",
    "width",
    "height",
    "batch_size",
    "batch_count",
    "strength",
    "styles",
];

/// Splits a line as Python's `shlex.split` (POSIX mode, no comments) does.
pub fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("no closing quotation".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.peek() {
                            Some(&next @ ('"' | '\\')) => {
                                word.push(next);
                                chars.next();
                            }
                            _ => word.push('\\'),
                        },
                        Some(c) => word.push(c),
                        None => return Err("no closing quotation".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(next) => word.push(next),
                    None => return Err("no escaped character".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// How an A1111 flag's value is read, and the recipe field it sets (`None`: accepted and left
/// out, with a warning).
fn a1111_flag(tag: &str) -> Option<(Kind, Option<&'static str>)> {
    Some(match tag {
        "prompt" => (Kind::Text, Some("prompt")),
        "negative_prompt" => (Kind::Text, Some("negative_prompt")),
        "styles" => (Kind::Text, Some("styles")),
        "seed" => (Kind::Int, Some("seed")),
        "steps" => (Kind::Int, Some("steps")),
        "cfg_scale" => (Kind::Float, Some("cfg_scale")),
        "width" => (Kind::Int, Some("width")),
        "height" => (Kind::Int, Some("height")),
        "batch_size" => (Kind::Int, Some("batch_size")),
        "n_iter" => (Kind::Int, Some("batch_count")),
        "sampler_name" => (Kind::Text, Some("sampler")),
        "denoising_strength" => (Kind::Float, Some("strength")),
        "sd_model" => (Kind::Text, Some("model")),
        "subseed" | "seed_resize_from_h" | "seed_resize_from_w" | "sampler_index" => (Kind::Int, None),
        "subseed_strength" => (Kind::Float, None),
        "restore_faces" | "tiling" | "do_not_save_samples" | "do_not_save_grid" => (Kind::Bool, None),
        "outpath_samples" | "outpath_grids" | "prompt_for_display" => (Kind::Text, None),
        _ => return None,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Float,
    Bool,
}

/// A1111's flags line as recipe fields.
fn read_flags(line: &str) -> Result<(Map<String, Value>, Vec<String>), String> {
    let args = shell_words(line)?;
    let mut fields = Map::new();
    let mut ignored = Vec::new();
    let mut pos = 0;
    while pos < args.len() {
        let arg = &args[pos];
        let tag = arg.strip_prefix("--").ok_or_else(|| format!("must start with \"--\": {arg}"))?;
        if pos + 1 >= args.len() {
            return Err(format!("missing argument for command line option {arg}"));
        }
        if tag == "prompt" || tag == "negative_prompt" {
            pos += 1;
            let mut text = args[pos].clone();
            pos += 1;
            while pos < args.len() && !args[pos].starts_with("--") {
                text.push(' ');
                text.push_str(&args[pos]);
                pos += 1;
            }
            fields.insert(tag.to_string(), Value::String(text));
            continue;
        }
        let (kind, field) = a1111_flag(tag).ok_or_else(|| format!("unknown commandline option: {arg}"))?;
        let raw = &args[pos + 1];
        let value = match kind {
            Kind::Text => Value::String(raw.clone()),
            Kind::Int => Value::from(
                raw.trim().parse::<i64>().map_err(|_| format!("{arg}: {raw:?} is not a whole number"))?,
            ),
            Kind::Float => {
                Value::from(raw.trim().parse::<f64>().map_err(|_| format!("{arg}: {raw:?} is not a number"))?)
            }
            Kind::Bool => Value::Bool(raw == "true"),
        };
        match field {
            Some("styles") => {
                let names = raw.split(',').map(|s| Value::String(s.trim().to_string())).filter(|v| v != "");
                fields.insert("styles".into(), Value::Array(names.collect()));
            }
            Some(field) => {
                fields.insert(field.to_string(), value);
            }
            None => ignored.push(arg.clone()),
        }
        pos += 2;
    }
    let warnings =
        ignored.into_iter().map(|f| format!("{f} has no effect in Darkroom and is left out")).collect();
    Ok((fields, warnings))
}

/// The jobs of a prompts file's text, in order.
pub fn parse(text: &str) -> Result<Vec<Job>, BatchError> {
    let mut jobs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let number = i + 1;
        if line.is_empty() {
            continue;
        }
        let mut warnings = Vec::new();
        let fields = if line.starts_with('{') {
            let value: Value = serde_json::from_str(line)
                .map_err(|e| BatchError::Line { line: number, message: format!("not a JSON recipe: {e}") })?;
            let Value::Object(fields) = value else {
                unreachable!("a line starting with {{ parsed as an object")
            };
            if let Some(unknown) = fields.keys().find(|k| !RECIPE_FIELDS.contains(&k.as_str())) {
                return Err(BatchError::Line {
                    line: number,
                    message: format!(
                        "unknown recipe field {unknown:?} (known: {})",
                        RECIPE_FIELDS.join(", ")
                    ),
                });
            }
            fields
        } else if line.contains("--") {
            match read_flags(line) {
                Ok((fields, w)) => {
                    warnings.extend(w);
                    fields
                }
                Err(why) => {
                    warnings.push(format!("read as a prompt: {why}"));
                    Map::from_iter([("prompt".to_string(), Value::String(line.to_string()))])
                }
            }
        } else {
            Map::from_iter([("prompt".to_string(), Value::String(line.to_string()))])
        };
        jobs.push(Job { line: number, fields, warnings });
    }
    Ok(jobs)
}

/// `K/N`: shard K (from 1) of N.
pub fn parse_shard(text: &str) -> Result<(usize, usize), BatchError> {
    let bad = || BatchError::Shard(text.to_string());
    let (k, n) = text.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if k == 0 || n == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// The jobs (indices into the file's jobs) shard `k` of `n` runs: every n-th, starting at the
/// k-th. The shards of one N are disjoint and together hold every job, whatever machine runs
/// them.
pub fn shard(jobs: usize, k: usize, n: usize) -> Vec<usize> {
    (0..jobs).filter(|i| i % n == k - 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_split_as_shlex() {
        assert_eq!(
            shell_words(r#"--prompt "a cat, oil" --steps 3"#).unwrap(),
            ["--prompt", "a cat, oil", "--steps", "3"]
        );
        assert_eq!(shell_words(r#"a'b c'd "e\"f" g\ h"#).unwrap(), ["ab cd", "e\"f", "g h"]);
        assert_eq!(shell_words(r#""back\slash""#).unwrap(), ["back\\slash"]);
        assert!(shell_words("--prompt \"open").is_err());
    }

    #[test]
    fn lines_read_as_a1111_reads_them() {
        let text = "a lighthouse at dusk\n\
            \n\
            --prompt \"a fox\" in snow --negative_prompt blurry --steps 30 --cfg_scale 6.5 --seed 7 --sampler_name \"Euler a\" --n_iter 2\n\
            --prompt owl --tiling true\n\
            a cat -- dog\n\
            --prompt x --steps 3.5\n\
            {\"prompt\": \"json owl\", \"steps\": 4, \"styles\": [\"Ink\"]}\n\
            --prompt y --styles \"Ink, Cine\"\n";
        let jobs = parse(text).unwrap();
        assert_eq!(jobs.len(), 7);
        assert_eq!(jobs[0].fields["prompt"], "a lighthouse at dusk");
        assert_eq!(jobs[0].line, 1);
        let f = &jobs[1].fields;
        assert_eq!(jobs[1].line, 3);
        assert_eq!(f["prompt"], "a fox in snow");
        assert_eq!(f["negative_prompt"], "blurry");
        assert_eq!(
            (f["steps"].as_i64(), f["cfg_scale"].as_f64(), f["seed"].as_i64()),
            (Some(30), Some(6.5), Some(7))
        );
        assert_eq!((f["sampler"].as_str(), f["batch_count"].as_i64()), (Some("Euler a"), Some(2)));
        assert_eq!(jobs[2].fields["prompt"], "owl");
        assert!(jobs[2].warnings[0].contains("--tiling"));
        // Not flags after all: the line is the prompt.
        assert_eq!(jobs[3].fields["prompt"], "a cat -- dog");
        assert!(jobs[3].warnings[0].contains("read as a prompt"));
        assert_eq!(jobs[4].fields["prompt"], "--prompt x --steps 3.5", "a bad value: the whole line");
        assert_eq!(jobs[5].fields["steps"], 4);
        assert_eq!(jobs[6].fields["styles"], serde_json::json!(["Ink", "Cine"]));
        assert!(matches!(parse("{\"prompt\": 1, \"cfg\": 3}"), Err(BatchError::Line { line: 1, .. })));
        assert!(matches!(parse("{not json"), Err(BatchError::Line { line: 1, .. })));
    }

    #[test]
    fn shards_partition_exactly() {
        for n in 1..6 {
            let mut all: Vec<usize> = (1..=n).flat_map(|k| shard(17, k, n)).collect();
            all.sort();
            assert_eq!(all, (0..17).collect::<Vec<_>>(), "{n} shards");
        }
        assert_eq!(parse_shard("2/4").unwrap(), (2, 4));
        for bad in ["0/4", "5/4", "1/0", "x/2", "3"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
