//! `darkroom models list|fetch|rm`: the manifests in `models/` (or one given with --manifest)
//! against the cache folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use darkroom_weights::fetch::{fetch_model, ChunkStore, FetchOptions, FetchProgress, DEFAULT_CHUNK};
use darkroom_weights::manifest;
use darkroom_weights::native::{default_cache_dir, FolderStore, HttpSource};
use darkroom_weights::Manifest;

use crate::generate::Failure;

#[derive(clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub action: Action,
    /// The cache folder (default: $DARKROOM_CACHE, else $XDG_CACHE_HOME/darkroom, else ~/.cache/darkroom).
    #[arg(long, global = true)]
    pub cache: Option<PathBuf>,
    /// A manifest file to use besides the built-in ones (models/*.toml).
    #[arg(long, global = true)]
    pub manifest: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum Action {
    /// Known models, their download size and what the cache holds of each.
    List,
    /// Download a model (resumes a partial download; checks sha256 where the manifest has it).
    Fetch {
        id: String,
        /// Fetch from this base URL instead of the Hugging Face CDN (mirrors, tests).
        #[arg(long)]
        base_url: Option<String>,
        /// Accept the model's license without asking (it is printed either way).
        #[arg(long)]
        accept_license: bool,
        #[arg(long)]
        quiet: bool,
    },
    /// Delete a model from the cache (`all` deletes every model).
    Rm { id: String },
}

fn usage(message: String) -> Failure {
    Failure { message, usage: true }
}

fn manifests(extra: Option<&Path>) -> Result<Vec<Manifest>, Failure> {
    let mut all = manifest::builtin().map_err(|e| Failure { message: e.to_string(), usage: false })?;
    if let Some(path) = extra {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        let m = Manifest::parse(&text, &path.display().to_string()).map_err(|e| usage(e.to_string()))?;
        all.retain(|x| x.id != m.id);
        all.push(m);
    }
    Ok(all)
}

fn find(all: &[Manifest], id: &str) -> Result<Manifest, Failure> {
    all.iter().find(|m| m.id == id).cloned().ok_or_else(|| {
        let ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
        usage(format!("no model called {id:?}; known: {}", ids.join(", ")))
    })
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// complete / partial (bytes) / missing / corrupt (a complete file of the wrong size).
fn state(store: &FolderStore, m: &Manifest) -> Result<(String, u64), Failure> {
    let (mut complete, mut have, mut corrupt) = (0usize, 0u64, false);
    for f in &m.files {
        let s = pollster::block_on(store.stored(&format!("{}/{}", m.id, f.path), DEFAULT_CHUNK))
            .map_err(|e| Failure { message: e.to_string(), usage: false })?;
        if s.complete {
            complete += 1;
            have += s.total.unwrap_or(0);
            corrupt |= f.size.is_some_and(|size| Some(size) != s.total);
        } else {
            have += (s.chunks * DEFAULT_CHUNK).min(s.total.or(f.size).unwrap_or(0));
        }
    }
    let label = if corrupt {
        "corrupt (sizes differ; rm and fetch again)".to_string()
    } else if complete == m.files.len() {
        "complete".to_string()
    } else if have > 0 || complete > 0 {
        format!("partial, {} here", mb(have))
    } else {
        "not downloaded".to_string()
    };
    Ok((label, have))
}

/// The cache folder of a complete model, for `generate --model <id>`.
pub fn resolve(id: &str, cache: Option<&Path>) -> Result<PathBuf, Failure> {
    let all = manifests(None)?;
    let m = find(&all, id)?;
    let store = FolderStore::new(cache.map_or_else(default_cache_dir, Path::to_path_buf));
    let (label, _) = state(&store, &m)?;
    if label != "complete" {
        return Err(usage(format!(
            "{id} is {label} in {}; run `darkroom models fetch {id}` first",
            store.root.display()
        )));
    }
    Ok(store.model_dir(id))
}

pub fn run(args: ModelsArgs) -> Result<(), Failure> {
    let all = manifests(args.manifest.as_deref())?;
    let store = FolderStore::new(args.cache.clone().unwrap_or_else(default_cache_dir));
    match args.action {
        Action::List => {
            println!("cache: {}", store.root.display());
            for m in &all {
                let (size, exact) = m.download_size();
                let size = if exact {
                    mb(size)
                } else if size > 0 {
                    format!("≥ {}", mb(size))
                } else {
                    "size unknown".into()
                };
                let (label, _) = state(&store, m)?;
                println!("{:<20} {:<34} {:>14}  {}  [{}]", m.id, m.name, size, label, m.license.name);
            }
            Ok(())
        }
        Action::Rm { id } => {
            let ids: Vec<String> = if id == "all" {
                all.iter().map(|m| m.id.clone()).collect()
            } else {
                vec![find(&all, &id)?.id]
            };
            for id in ids {
                let freed =
                    store.remove_model(&id).map_err(|e| Failure { message: e.to_string(), usage: false })?;
                if freed > 0 {
                    println!("removed {id} ({})", mb(freed));
                }
            }
            Ok(())
        }
        Action::Fetch { id, base_url, accept_license, quiet } => {
            let m = find(&all, &id)?;
            println!("{} is licensed under {}: {}", m.name, m.license.name, m.license.url);
            if !accept_license {
                eprint!("Accept the license and download? [y/N] ");
                let _ = std::io::stderr().flush();
                let mut answer = String::new();
                let _ = std::io::stdin().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Err(usage(
                        "not downloaded: the license was not accepted (or pass --accept-license)".into(),
                    ));
                }
            }
            let started = std::time::Instant::now();
            let options = FetchOptions {
                chunk_size: DEFAULT_CHUNK,
                base_url: base_url.as_deref(),
                cancelled: &|| false,
            };
            let mut progress = |p: &FetchProgress| {
                if !quiet {
                    let rate = p.model_done as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    eprint!(
                        "\r{} / {}  {}/s  {:<60}",
                        mb(p.model_done),
                        mb(p.model_total),
                        mb(rate as u64),
                        p.path
                    );
                    let _ = std::io::stderr().flush();
                }
            };
            pollster::block_on(fetch_model(&HttpSource::default(), &store, &m, &options, &mut progress))
                .map_err(|e| {
                    let usage =
                        matches!(e, darkroom_weights::fetch::FetchError::Http { status: 400..=499, .. });
                    Failure { message: e.to_string(), usage }
                })?;
            if !quiet {
                eprintln!();
            }
            println!("{} is ready in {}", m.id, store.model_dir(&m.id).display());
            Ok(())
        }
    }
}
