//! `darkroom models list|fetch|rm|import`: the manifests in `models/` (or one given with
//! --manifest) and the imported checkpoints against the cache folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use darkroom_weights::checkpoint::{model_id, ByteSource, CheckpointError, IMPORTED_MANIFEST};
use darkroom_weights::fetch::{fetch_model, ChunkStore, FetchOptions, FetchProgress, DEFAULT_CHUNK};
use darkroom_weights::manifest;
use darkroom_weights::native::{default_cache_dir, FolderStore, HttpSource};
use darkroom_weights::Manifest;

use darkroom_engine::EngineError;

use crate::failure::{usage, Failure};

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
    List {
        /// Also each downloaded file's size, sha256 and the commit it was downloaded from.
        #[arg(long)]
        verbose: bool,
    },
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
    /// Import a LoRA (.safetensors, kohya or diffusers layout) into the cache's loras/ folder,
    /// where `<lora:NAME:scale>` in a prompt finds it.
    ImportLora {
        /// The LoRA file.
        file: PathBuf,
        /// The name prompts use (default: the file name without .safetensors).
        #[arg(long)]
        name: Option<String>,
    },
    /// Import a textual-inversion embedding (A1111's .safetensors or .pt, diffusers'
    /// learned_embeds) into the cache's embeddings/ folder; its name written in a prompt or
    /// negative prompt is replaced by its vectors.
    ImportEmbedding {
        /// The embedding file.
        file: PathBuf,
        /// The word prompts use (default: the file name without its extension).
        #[arg(long)]
        name: Option<String>,
    },
    /// Import a single-file SD 1.x or SDXL checkpoint (.safetensors in the original LDM layout,
    /// as model sites share them) into the cache, on the configs and tokenizers of a base model
    /// of its family.
    Import {
        /// The checkpoint file.
        file: PathBuf,
        /// The base model: an id (downloaded) or a diffusers folder. Its configs, tokenizer and
        /// scheduler are used; its weights are not.
        #[arg(long, default_value = "sd-1.5")]
        base: String,
        /// The new model's id (default: from the file name).
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        quiet: bool,
    },
}

/// The built-in manifests, the imported models in `cache`, and `extra`.
fn manifests(extra: Option<&Path>, cache: &Path) -> Result<Vec<Manifest>, Failure> {
    let mut all = manifest::builtin().map_err(|e| Failure { message: e.to_string(), usage: false })?;
    if let Ok(dirs) = std::fs::read_dir(cache) {
        let mut found: Vec<PathBuf> =
            dirs.flatten().map(|d| d.path().join(IMPORTED_MANIFEST)).filter(|p| p.is_file()).collect();
        found.sort();
        for path in found {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Ok(m) = Manifest::parse(&text, &path.display().to_string()) {
                // An imported model never takes a built-in model's id.
                if !all.iter().any(|x| x.id == m.id) {
                    all.push(m);
                }
            }
        }
    }
    if let Some(path) = extra {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        let m = Manifest::parse(&text, &path.display().to_string()).map_err(|e| usage(e.to_string()))?;
        if let Some(existing) = all.iter().find(|x| x.id == m.id) {
            return Err(usage(format!(
                "--manifest {}: its id {:?} is taken by {}; a manifest may not replace another model (give it its own id)",
                path.display(),
                m.id,
                existing.name
            )));
        }
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

/// Each stored file of `m` with its size, sha256 and commit (`models list --verbose`).
fn print_integrity(store: &FolderStore, m: &Manifest) {
    let (pinned, records) = store.integrity(&m.id);
    match &pinned {
        Some(commit) => println!("    pinned to commit {commit}"),
        None => println!("    no pinned commit (the server did not name one, or the model was imported)"),
    }
    for f in &m.files {
        match records.iter().find(|(path, _)| *path == f.path) {
            Some((_, r)) => {
                let commit = r.commit.as_deref().map_or(String::new(), |c| format!("  commit {c}"));
                println!("    {:<48} {:>12} bytes  sha256 {}{commit}", f.path, r.size, r.sha256);
            }
            None => {
                let state = pollster::block_on(store.stored(&format!("{}/{}", m.id, f.path), DEFAULT_CHUNK));
                let what = match state {
                    Ok(s) if s.complete => "complete, not yet hashed (fetch again to record it)",
                    Ok(s) if s.chunks > 0 => "partial",
                    _ => "not downloaded",
                };
                println!("    {:<48} {what}", f.path);
            }
        }
    }
}

/// The cache folder of a complete model, for `generate --model <id>`.
pub fn resolve(id: &str, cache: Option<&Path>) -> Result<PathBuf, Failure> {
    let store = FolderStore::new(cache.map_or_else(default_cache_dir, Path::to_path_buf));
    let all = manifests(None, &store.root)?;
    let m = find(&all, id)?;
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
    let store = FolderStore::new(args.cache.clone().unwrap_or_else(default_cache_dir));
    let all = manifests(args.manifest.as_deref(), &store.root)?;
    match args.action {
        Action::Import { file, base, id, quiet } => import(&store, &all, &file, &base, id, quiet),
        Action::ImportLora { file, name } => import_lora(&store.root, &file, name),
        Action::ImportEmbedding { file, name } => import_embedding(&store.root, &file, name),
        Action::List { verbose } => {
            println!("cache: {}", store.root.display());
            for (name, bytes) in loras(&store.root) {
                println!("lora {name:<34} {:>14}  use as <lora:{name}:1>", mb(bytes));
            }
            for (name, path) in crate::embeddings::files(&store.root.join("embeddings")) {
                let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                println!("embedding {name:<29} {:>14}  write {name} in a prompt", mb(bytes));
            }
            for m in &all {
                let (size, exact) = m.download_size();
                let size = if exact {
                    mb(size)
                } else if size > 0 {
                    format!("≥ {}", mb(size))
                } else {
                    "size unknown".into()
                };
                let (label, have) = state(&store, m)?;
                println!("{:<20} {:<34} {:>14}  {}  [{}]", m.id, m.name, size, label, m.license.name);
                if verbose && have > 0 {
                    print_integrity(&store, m);
                }
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
                let _lock = store.lock_model(&id).map_err(|e| usage(e.to_string()))?;
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
            let _lock = store.lock_model(&m.id).map_err(|e| usage(e.to_string()))?;
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
                    crate::progress!(
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

/// A checkpoint file read in ranges.
/// A base model's diffusers folder.
struct FolderFiles(PathBuf);

impl darkroom_engine::imports::BaseFiles for FolderFiles {
    async fn read(&self, path: &str) -> Result<Option<Vec<u8>>, darkroom_engine::EngineError> {
        Ok(std::fs::read(self.0.join(path)).ok())
    }
}

struct CheckpointFile {
    file: std::sync::Mutex<std::fs::File>,
    len: u64,
}

impl ByteSource for CheckpointFile {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read(&self, start: u64, len: u64) -> Result<Vec<u8>, CheckpointError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file =
            self.file.lock().map_err(|_| CheckpointError::Read("the file lock is poisoned".into()))?;
        file.seek(SeekFrom::Start(start)).map_err(|e| CheckpointError::Read(e.to_string()))?;
        let mut out = Vec::with_capacity(len as usize);
        (&mut *file).take(len).read_to_end(&mut out).map_err(|e| CheckpointError::Read(e.to_string()))?;
        Ok(out)
    }
}

/// `darkroom models import FILE --base B [--id ID]`.
/// The LoRAs in `<cache>/loras`, by name, with their sizes.
fn loras(cache: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(cache.join("loras")) else { return Vec::new() };
    let mut out: Vec<(String, u64)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().strip_suffix(".safetensors")?.to_string();
            Some((name, e.metadata().ok()?.len()))
        })
        .collect();
    out.sort();
    out
}

/// The cache's `loras/` folder as the LoRA store.
struct FolderLoras(PathBuf);

impl darkroom_engine::imports::LoraStore for FolderLoras {
    async fn put(&self, name: &str, bytes: &[u8], _identity: &str) -> Result<(), EngineError> {
        // The CLI knows a LoRA by the hash of the file it reads, so the identity is not kept.
        let fail = |e: std::io::Error| EngineError::Storage(format!("{}: {e}", self.0.display()));
        std::fs::create_dir_all(&self.0).map_err(fail)?;
        let target = self.0.join(format!("{name}.safetensors"));
        let part = self.0.join(format!("{name}.safetensors.part"));
        std::fs::write(&part, bytes).map_err(fail)?;
        std::fs::rename(&part, &target).map_err(fail)
    }
}

struct FolderEmbeddings(PathBuf);

impl darkroom_engine::imports::EmbeddingStore for FolderEmbeddings {
    async fn put(&self, name: &str, extension: &str, bytes: &[u8]) -> Result<(), EngineError> {
        let fail = |e: std::io::Error| EngineError::Storage(format!("{}: {e}", self.0.display()));
        std::fs::create_dir_all(&self.0).map_err(fail)?;
        // One file per name, whichever format it came in.
        for ext in ["safetensors", "pt"] {
            let _ = std::fs::remove_file(self.0.join(format!("{name}.{ext}")));
        }
        let part = self.0.join(format!("{name}.{extension}.part"));
        std::fs::write(&part, bytes).map_err(fail)?;
        std::fs::rename(&part, self.0.join(format!("{name}.{extension}"))).map_err(fail)
    }
}

fn import_embedding(cache: &Path, file: &Path, name: Option<String>) -> Result<(), Failure> {
    let bytes = std::fs::read(file).map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    let name = name.unwrap_or_else(|| darkroom_weights::embedding::name_from_file(&file.to_string_lossy()));
    let store = FolderEmbeddings(cache.join("embeddings"));
    let imported = pollster::block_on(darkroom_engine::imports::import_embedding(
        bytes,
        &file.display().to_string(),
        &name,
        &store,
    ))
    .map_err(|e| match e {
        EngineError::Input { field: Some("name"), message } => usage(format!("{message}; give --name")),
        e => e.into(),
    })?;
    println!(
        "imported embedding {name} ({}, {} vectors): write {name} in a prompt or negative prompt",
        imported.kind, imported.vectors
    );
    Ok(())
}

fn import_lora(cache: &Path, file: &Path, name: Option<String>) -> Result<(), Failure> {
    let bytes = std::fs::read(file).map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    let name = name.unwrap_or_else(|| darkroom_weights::lora::name_from_file(&file.to_string_lossy()));
    let store = FolderLoras(cache.join("loras"));
    let file_name = file.display().to_string();
    let imported = pollster::block_on(darkroom_engine::imports::import_lora(
        bytes, &file_name, &name, &store,
    ))
    .map_err(|e| match e {
        EngineError::Input { field: Some("name"), message } => usage(format!("{message}; give --name")),
        e => e.into(),
    })?;
    println!("imported LoRA {name} ({} layers): use <lora:{name}:1> in a prompt", imported.layers);
    Ok(())
}

fn import(
    store: &FolderStore,
    all: &[Manifest],
    file: &Path,
    base: &str,
    id: Option<String>,
    quiet: bool,
) -> Result<(), Failure> {
    let fail = |message: String| Failure { message, usage: false };
    let opened =
        std::fs::File::open(file).map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    let len = opened.metadata().map_err(|e| usage(format!("{}: {e}", file.display())))?.len();
    let source = CheckpointFile { file: std::sync::Mutex::new(opened), len };
    // The header is checked before anything else is done with the file.
    let header = pollster::block_on(darkroom_weights::checkpoint::read_header_bytes(&source))
        .map_err(|e| e.to_string())
        .and_then(|prefix| darkroom_weights::Header::parse(&prefix, len).map_err(|e| e.to_string()));
    header.map_err(|e| usage(format!("{}: {e}", file.display())))?;
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let file_name = file.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let id = id.unwrap_or_else(|| model_id(&file_name));
    darkroom_weights::manifest::check_id(&id).map_err(|e| usage(format!("--id: {e}")))?;
    if all.iter().any(|m| m.id == id && !store.model_dir(&id).join(IMPORTED_MANIFEST).is_file()) {
        return Err(usage(format!("{id} is a built-in model's id; pass --id to name the import")));
    }
    // The base: a diffusers folder, or a downloaded model by id (whose manifest lends defaults).
    let (base_dir, base_manifest) = if Path::new(base).join("unet/config.json").is_file() {
        // A folder lends its configs; the shipped manifest of its family lends the defaults.
        let folder = darkroom_pipeline::Folder(PathBuf::from(base));
        let family =
            pollster::block_on(darkroom_pipeline::model::family(&folder)).map_err(|e| fail(e.to_string()))?;
        let like = match family {
            darkroom_pipeline::model::Family::Sd => "sd-1.5",
            darkroom_pipeline::model::Family::Sdxl { .. } => "sdxl",
        };
        let mut m = manifest::find(like).map_err(|e| fail(e.to_string()))?;
        m.name = Path::new(base).file_name().map_or(base.to_string(), |n| n.to_string_lossy().into_owned());
        (PathBuf::from(base), m)
    } else {
        let manifest = find(all, base)?;
        darkroom_engine::imports::check_base(&manifest)?;
        (resolve(base, Some(&store.root))?, manifest)
    };
    let started = std::time::Instant::now();
    let mut shown = std::time::Instant::now() - std::time::Duration::from_secs(1);
    let mut progress = |done: u64, total: u64| {
        // A few updates a second, and the last.
        if !quiet && (shown.elapsed().as_millis() >= 200 || done == total) {
            shown = std::time::Instant::now();
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
            crate::progress!("\r{} / {}  {}/s   ", mb(done), mb(total), mb(rate as u64));
            let _ = std::io::stderr().flush();
        }
    };
    let imported = pollster::block_on(darkroom_engine::imports::import(
        &source,
        &file.display().to_string(),
        store,
        &base_manifest,
        &FolderFiles(base_dir),
        &id,
        &stem,
        &mut progress,
        &|| false,
    ))?;
    if !quiet {
        eprintln!();
    }
    let path = store.model_dir(&id).join(IMPORTED_MANIFEST);
    std::fs::write(&path, &imported.manifest_toml).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    if imported.skipped > 0 {
        println!(
            "left out {} tensors a pipeline does not use (EMA weights, training state)",
            imported.skipped
        );
    }
    println!("{id} is ready in {}: darkroom generate --model {id} …", store.model_dir(&id).display());
    Ok(())
}
