//! Idempotent installs: each step checks what is present (and its version) and skips if right.
//! Versions and the reasons for them: ../shared/TOOLCHAIN.md, summarised in the README.

use std::process::Command;

use crate::{root, run, tool_path, Result};

const TRUNK_VERSION: &str = "0.21.14";
const NPM_TOOLS: &[(&str, &str)] = &[("binaryen", "132.0.0"), ("playwright-core", "1.65.1")];
const APT_PACKAGES: &[&str] = &["chromium", "mesa-vulkan-drivers"];

/// Everything the tests need.
pub fn all() -> Result<()> {
    web_tools()?;
    apt_packages()
}

/// What building the web app needs: the wasm target, trunk, wasm-bindgen-cli, npm tools.
pub fn web_tools() -> Result<()> {
    wasm_target()?;
    trunk()?;
    wasm_bindgen()?;
    npm_tools()
}

/// stdout of a command, or None when it cannot run or fails.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.env("PATH", tool_path()).current_dir(root()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn skip(what: &str) {
    println!("setup: {what} present, skipping");
}

fn wasm_target() -> Result<()> {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == "wasm32-unknown-unknown") {
        skip("wasm32-unknown-unknown target");
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

/// Runs `install` unless `tool --version` already prints `expected`, then checks it does.
fn ensure_tool(tool: &str, expected: &str, install: &mut Command) -> Result<()> {
    let version = || output(Command::new(tool).arg("--version")).unwrap_or_default().trim().to_string();
    if version() == expected {
        skip(expected);
        return Ok(());
    }
    run(install)?;
    let now = version();
    if now != expected {
        return Err(format!(
            "installed {expected}, but `{tool} --version` says {now:?}: is another {tool} earlier on PATH?"
        ));
    }
    Ok(())
}

fn trunk() -> Result<()> {
    // 0.22 needs a newer rustc than the one here; --locked keeps its dependencies as released.
    // --force: cargo's install records may list a binary that is gone or another version.
    ensure_tool(
        "trunk",
        &format!("trunk {TRUNK_VERSION}"),
        Command::new("cargo").args(["install", "--force", "--locked", "trunk", "--version", TRUNK_VERSION]),
    )
}

/// The wasm-bindgen crate's version in Cargo.lock, which the CLI must equal exactly.
pub fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).map_err(|e| format!("Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines.next().and_then(|l| l.trim().strip_prefix("version = \"")) {
                return Ok(v.trim_end_matches('"').to_string());
            }
        }
    }
    Err("Cargo.lock has no wasm-bindgen entry".into())
}

fn wasm_bindgen() -> Result<()> {
    let version = locked_wasm_bindgen_version()?;
    let trunk_toml =
        std::fs::read_to_string(root().join("Trunk.toml")).map_err(|e| format!("Trunk.toml: {e}"))?;
    if !trunk_toml.contains(&format!("wasm_bindgen = \"{version}\"")) {
        return Err(format!(
            "Trunk.toml's [tools] wasm_bindgen must equal Cargo.lock's wasm-bindgen {version}; update one of them"
        ));
    }
    // Not --locked: one of its locked dependencies is missing from the registry mirror.
    ensure_tool(
        "wasm-bindgen",
        &format!("wasm-bindgen {version}"),
        Command::new("cargo").args(["install", "--force", "wasm-bindgen-cli", "--version", &version]),
    )
}

fn npm_tools() -> Result<()> {
    let present = NPM_TOOLS.iter().all(|(name, version)| {
        let manifest = root().join("node_modules").join(name).join("package.json");
        std::fs::read_to_string(manifest)
            .map(|text| text.contains(&format!("\"version\": \"{version}\"")))
            .unwrap_or(false)
    });
    if present {
        skip("npm tools (binaryen, playwright-core)");
        return Ok(());
    }
    // playwright-core never downloads a browser; the tests use Debian's chromium.
    run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]))
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            let status =
                output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg])).unwrap_or_default();
            status.trim() != "install ok installed"
        })
        .collect();
    if missing.is_empty() {
        skip("Debian packages (chromium, mesa-vulkan-drivers)");
        return Ok(());
    }
    let is_root = output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0");
    if !is_root {
        return Err(format!(
            "missing Debian packages {missing:?}: run `sudo apt-get install -y {}` and try again",
            missing.join(" ")
        ));
    }
    run(Command::new("apt-get").args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
