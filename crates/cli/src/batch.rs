//! `darkroom batch FILE [--shard K/N] --out DIR`: every job of a prompts file (A1111's format or
//! JSON-lines recipes, see `darkroom_workflow::batch`) over the command line's settings.
//!
//! Resumable: job j's images are DIR/<j>-<seed>.png (j numbered from 1 in file order, seeds
//! decided before anything runs), written whole or not at all; a job whose images are all there
//! is skipped, so running the command again after a crash or a stop makes only what is missing.
//! `--shard K/N` runs every N-th job from the K-th: N machines running shards 1..N of one file
//! into one folder (or N folders) make each image exactly once.

use std::path::{Path, PathBuf};

use clap::Args;
use darkroom_gpu::Gpu;
use darkroom_pipeline::{Recipe, Sampler};
use darkroom_workflow::batch::{self, Job};
use serde_json::Value;

use crate::failure::{usage, Failure};
use crate::generate::{write_atomically, Runner, Settings};

#[derive(Args)]
pub struct BatchArgs {
    /// A prompts file: a prompt a line; or a line of A1111 flags (`--prompt "a cat" --steps 30
    /// --cfg_scale 6 --seed 7 --sampler_name "Euler a" --negative_prompt …`); or a JSON recipe
    /// a line (`{"prompt": "a cat", "steps": 30}`). Blank lines are skipped.
    pub file: PathBuf,
    /// Run shard K of N (K from 1): jobs K, K+N, K+2N, … of the file.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    #[command(flatten)]
    pub settings: Settings,
    /// The folder for the images (<job>-<seed>.png); created if missing.
    #[arg(long)]
    pub out: PathBuf,
}

/// A seed for job `index` of a file without one: the same for the same file on every run.
fn derived_seed(text: &str, index: usize) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes().chain((index as u64).to_le_bytes()) {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % 4_294_967_295
}

/// A job's recipe: the settings, the line's fields over them, the styles applied.
fn job_recipe(runner: &Runner, job: &Job, seed: u64) -> Result<Recipe, String> {
    let f = &job.fields;
    let text = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_string);
    let whole = |k: &str| -> Result<Option<usize>, String> {
        match f.get(k) {
            None => Ok(None),
            Some(v) => {
                v.as_u64().map(|n| Some(n as usize)).ok_or(format!("{k} must be a whole number, got {v}"))
            }
        }
    };
    let number = |k: &str| -> Result<Option<f64>, String> {
        match f.get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or(format!("{k} must be a number, got {v}")),
        }
    };
    let mut recipe = runner.recipe(&text("prompt").unwrap_or_default());
    if let Some(n) = text("negative_prompt") {
        recipe.negative_prompt = n;
    }
    if let Some(m) = text("model") {
        recipe.model = m;
    }
    if let Some(s) = text("sampler") {
        recipe.sampler = s.parse::<Sampler>()?;
    }
    recipe.steps = whole("steps")?.unwrap_or(recipe.steps);
    recipe.width = whole("width")?.unwrap_or(recipe.width);
    recipe.height = whole("height")?.unwrap_or(recipe.height);
    recipe.batch_size = whole("batch_size")?.unwrap_or(recipe.batch_size);
    recipe.batch_count = whole("batch_count")?.unwrap_or(recipe.batch_count);
    recipe.cfg_scale = number("cfg_scale")?.map_or(recipe.cfg_scale, |c| c as f32);
    recipe.strength = number("strength")?.or(recipe.strength);
    recipe.seed = Some(seed);
    Ok(recipe)
}

/// The job's seed: its own (A1111's -1 means none), else --seed, else one derived from the file.
fn job_seed(job: &Job, settings: &Settings, text: &str, index: usize) -> u64 {
    match job.fields.get("seed").and_then(Value::as_i64) {
        Some(seed) if seed >= 0 => seed as u64,
        _ => settings.seed.unwrap_or_else(|| derived_seed(text, index)),
    }
}

fn output(dir: &Path, job: usize, seed: u64) -> PathBuf {
    dir.join(format!("{job:05}-{seed}.png"))
}

pub fn run(gpu: &Gpu, args: BatchArgs) -> Result<(), Failure> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| usage(format!("cannot read {}: {e}", args.file.display())))?;
    let jobs = batch::parse(&text).map_err(|e| usage(format!("{}: {e}", args.file.display())))?;
    let (k, n) = match &args.shard {
        Some(spec) => batch::parse_shard(spec).map_err(|e| usage(e.to_string()))?,
        None => (1, 1),
    };
    let mine = batch::shard(jobs.len(), k, n);
    std::fs::create_dir_all(&args.out)
        .map_err(|e| usage(format!("cannot create {}: {e}", args.out.display())))?;
    let quiet = args.settings.quiet;
    let mut runner = Runner::new(gpu, args.settings.clone())?;
    let mut failed = Vec::new();
    let (mut made, mut skipped) = (0, 0);
    for (done, &index) in mine.iter().enumerate() {
        let job = &jobs[index];
        let number = index + 1;
        let label = format!("job {number} (line {}, {}/{}): ", job.line, done + 1, mine.len());
        for warning in &job.warnings {
            eprintln!("warning: {}: line {}: {warning}", args.file.display(), job.line);
        }
        let seed = job_seed(job, &args.settings, &text, index);
        let recipe = match job_recipe(&runner, job, seed) {
            Ok(r) => r,
            Err(e) => {
                failed.push(format!("line {}: {e}", job.line));
                continue;
            }
        };
        let size_chosen =
            runner.size_chosen() || job.fields.contains_key("width") || job.fields.contains_key("height");
        let recipe = match runner.apply_preset(recipe, index, size_chosen) {
            Ok(r) => r,
            Err(e) => {
                failed.push(format!("line {}: {}", job.line, e.message));
                continue;
            }
        };
        let runs = match runner.expand(recipe) {
            Ok(runs) => runs,
            Err(e) => {
                failed.push(format!("line {}: {}", job.line, e.message));
                continue;
            }
        };
        let outputs: Vec<PathBuf> = runs
            .iter()
            .flat_map(|r| {
                let first = r.seed.unwrap_or(seed);
                (0..(r.batch_size.max(1) * r.batch_count.max(1)) as u64).map(move |i| first + i)
            })
            .map(|s| output(&args.out, number, s))
            .collect();
        if outputs.iter().all(|p| p.is_file()) {
            skipped += 1;
            if !quiet {
                eprintln!("{label}done before, skipped");
            }
            continue;
        }
        let names: Vec<String> = match job.fields.get("styles").and_then(Value::as_array) {
            Some(list) => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            None => runner.settings.style.clone(),
        };
        let mut outcome = Ok(());
        for mut recipe in runs {
            if let Err(e) = runner.apply_styles(&mut recipe, &names) {
                outcome = Err(e);
                break;
            }
            match runner.run(recipe, &label) {
                Ok(images) => {
                    for generated in &images {
                        let path = output(&args.out, number, generated.params.seed);
                        write_atomically(&path, &generated.to_png()?)?;
                        println!("{}", path.display());
                    }
                }
                Err(f) => {
                    outcome = Err(f);
                    break;
                }
            }
        }
        match outcome {
            Ok(()) => made += 1,
            // A bad line is reported and the batch goes on; a GPU failure ends it.
            Err(f) if f.usage => failed.push(format!("line {}: {}", job.line, f.message)),
            Err(f) => return Err(f),
        }
    }
    if !quiet {
        eprintln!(
            "{made} jobs made, {skipped} done before, {} failed (shard {k}/{n}: {} of {} jobs)",
            failed.len(),
            mine.len(),
            jobs.len()
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(usage(format!("{} jobs failed:\n  {}", failed.len(), failed.join("\n  "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_depend_on_the_file_and_the_job_only() {
        assert_eq!(derived_seed("a\nb\n", 0), derived_seed("a\nb\n", 0));
        assert_ne!(derived_seed("a\nb\n", 0), derived_seed("a\nb\n", 1));
        assert_ne!(derived_seed("a\nb\n", 0), derived_seed("a\nc\n", 0));
        assert!(derived_seed("x", 3) < 4_294_967_295);
    }
}
