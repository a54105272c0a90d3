//! `cargo xtask bench`: our engine against onnxruntime-web on the same models, inputs and
//! adapter, in headless Chromium. Installs what only the benchmark needs (a Python environment
//! with PyTorch/diffusers for the ONNX export, onnxruntime-web) on first use, outside the test
//! path, so `cargo xtask test` never pays for them.

use std::path::Path;
use std::process::Command;

use crate::{root, run, setup, Result};

const PYTHON_PACKAGES: &[&str] = &[
    "torch==2.15.0",
    "diffusers==0.42.1",
    "transformers==5.23.0",
    "safetensors==0.8.0",
    "accelerate",
    "onnx==1.23.2",
    "onnxscript==0.7.2",
];
const ONNXRUNTIME_WEB: &str = "onnxruntime-web@1.30.0";

/// Options: `--runs N` (timed runs per stage, default 3), `--latent N` (the SD-shaped slice's
/// latent side, default 16).
pub fn command(args: &[String]) -> Result<()> {
    let mut runs = "3".to_string();
    let mut latent = "16".to_string();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        value.parse::<u32>().map_err(|_| format!("{flag} wants a number, got {value:?}"))?;
        match flag.as_str() {
            "--runs" => runs = value.clone(),
            "--latent" => latent = value.clone(),
            _ => return Err("usage: cargo xtask bench [--runs N] [--latent N]".into()),
        }
    }
    setup::all()?;
    crate::build_web(true)?;
    let out = root().join("target/bench");
    python_env()?;
    export(&out, &latent)?;
    let tools = onnxruntime_web()?;
    run(Command::new("node")
        .arg("tests/bench/run.mjs")
        .env("BENCH_DIR", &out)
        .env("DIST", root().join("dist/dev"))
        .env("ORT_DIR", tools.join("node_modules/onnxruntime-web/dist"))
        .env("RUNS", &runs)
        .env("OUT", out.join("results.md")))?;
    println!("\n(table also in target/bench/results.md; native numbers: `darkroom bench kernels|models`)");
    Ok(())
}

/// `.venv` with the reference stack (the same one the fixture scripts use).
fn python_env() -> Result<()> {
    let python = root().join(".venv/bin/python");
    let probe = Command::new(&python).args(["-c", "import torch, diffusers, onnx, onnxscript"]).output();
    if probe.is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv", ".venv"]))?;
    }
    run(Command::new(&python).args(["-m", "pip", "install", "-q"]).args(PYTHON_PACKAGES))
}

/// Runs the export unless its output is newer than the script (it takes a minute or two).
fn export(out: &Path, latent: &str) -> Result<()> {
    let script = root().join("tests/bench/export.py");
    let stamp = out.join(format!("bench-latent{latent}.stamp"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(made), Some(source)) = (modified(&stamp), modified(&script)) {
        if made > source && out.join("bench.json").exists() {
            println!("skip: the exported benchmark models are up to date ({})", out.display());
            return Ok(());
        }
    }
    run(Command::new(root().join(".venv/bin/python"))
        .arg(&script)
        .arg(out)
        .args(["--latent", latent])
        .env("HF_HUB_OFFLINE", "1"))?;
    std::fs::write(&stamp, b"").map_err(|e| format!("{}: {e}", stamp.display()))
}

/// onnxruntime-web in target/bench-tools (not a dev dependency: only the benchmark loads it).
fn onnxruntime_web() -> Result<std::path::PathBuf> {
    let dir = root().join("target/bench-tools");
    let version = ONNXRUNTIME_WEB.rsplit('@').next().unwrap_or_default();
    let manifest = dir.join("node_modules/onnxruntime-web/package.json");
    if std::fs::read_to_string(&manifest).is_ok_and(|t| t.contains(&format!("\"version\": \"{version}\""))) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let package = dir.join("package.json");
    if !package.exists() {
        std::fs::write(&package, "{\"private\": true}\n")
            .map_err(|e| format!("{}: {e}", package.display()))?;
    }
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .arg(ONNXRUNTIME_WEB))?;
    Ok(dir)
}
