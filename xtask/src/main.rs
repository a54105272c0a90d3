//! Darkroom's one entry point for development: `cargo xtask <command>`.
//!
//!   serve [--port N]   install the web tools if missing, build the app, serve it on 127.0.0.1
//!   test               install everything if missing, run every test layer
//!   setup              only the installs (idempotent; skips what is present)
//!   build-web          only the Trunk build into dist/
//!   e2e [FILES]        the Trunk build and the browser tests only (all, or the given files)
//!   bench [--runs N]   our engine vs onnxruntime-web in headless Chromium, as a table
//!   soak [--runs N]    N generations (200) in one page; what could leak, after warm-up and at the end

mod bench;
mod serve;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

pub type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("serve") => serve_command(&args[1..]),
        Some("e2e") => e2e_command(&args[1..]),
        Some("bench") => bench::command(&args[1..]),
        Some("soak") => soak_command(&args[1..]),
        Some("test") => test_command(),
        Some("setup") => setup::all(),
        Some("build-web") => setup::web_tools().and_then(|_| build_web(true)),
        _ => {
            eprintln!("usage: cargo xtask <serve [--port N] | test | setup | build-web | e2e [FILES] | bench [--runs N] [--latent N] | soak [--runs N]>");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent").to_path_buf()
}

/// PATH with the project's npm tools (wasm-opt) and cargo's bin folder in front.
pub fn tool_path() -> String {
    let mut parts = vec![root().join("node_modules/.bin")];
    if let Some(home) = cargo_home() {
        parts.push(home.join("bin"));
    }
    let mut path = std::env::join_paths(parts).unwrap().into_string().unwrap_or_default();
    if let Ok(existing) = std::env::var("PATH") {
        path = format!("{path}:{existing}");
    }
    path
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// Runs a command in the repository root with the tool PATH; fails with its name on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .current_dir(root())
        .env("PATH", tool_path())
        .status()
        .map_err(|e| format!("could not start {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// The product into dist/ (`cargo xtask serve` serves it), and with `dev` the developer build
/// (the app plus the check and benchmark pages, the `dev-pages` feature) into dist/dev/ for the
/// browser tests and the benchmark. The product is built first: Trunk replaces dist/ whole.
pub fn build_web(dev: bool) -> Result<()> {
    run(Command::new("cargo").args(["fetch"]))?;
    run(Command::new("trunk").args(["build"]))?;
    // The widget's page: the app's, at its own path, so the headers file can let other sites
    // frame it and forbid framing the app (a query string cannot be told apart there).
    let dist = root().join("dist");
    std::fs::copy(dist.join("index.html"), dist.join("embed.html"))
        .map_err(|e| format!("dist/embed.html: {e}"))?;
    if dev {
        write_dev_index()?;
        run(Command::new("trunk").args(["build", "www/dev/index.html", "--dist", "dist/dev"]))?;
        // The developer build's widget, for the tests of a widget on partitioned storage (it
        // still takes a model from its address, which the product's widget ignores).
        std::fs::copy(dist.join("dev/index.html"), dist.join("dev/embed.html"))
            .map_err(|e| format!("dist/dev/embed.html: {e}"))?;
    }
    Ok(())
}

/// www/dev/index.html (not committed): the product's page one folder down, its Rust build with
/// the `dev-pages` feature, so the two pages cannot drift apart.
fn write_dev_index() -> Result<()> {
    let www = root().join("www");
    let page = std::fs::read_to_string(www.join("index.html")).map_err(|e| format!("www/index.html: {e}"))?;
    let rust = r#"<link data-trunk rel="rust" href="../crates/web""#;
    if !page.contains(rust) {
        return Err(format!("www/index.html has no `{rust}` line to build the developer pages from"));
    }
    let dev = page
        .replace(r#"<link data-trunk rel="copy-file" href=""#, r#"<link data-trunk rel="copy-file" href="../"#)
        .replace(rust, r#"<link data-trunk rel="rust" data-cargo-features="dev-pages" href="../../crates/web""#)
        .replace("<title>Darkroom</title>", "<title>Darkroom (developer pages)</title>");
    std::fs::create_dir_all(www.join("dev")).map_err(|e| format!("www/dev: {e}"))?;
    std::fs::write(www.join("dev/index.html"), dev).map_err(|e| format!("www/dev/index.html: {e}"))
}

fn serve_command(args: &[String]) -> Result<()> {
    let port = match args {
        [] => 8080,
        [flag, value] if flag == "--port" => {
            value.parse().map_err(|_| format!("--port wants a number, got {value:?}"))?
        }
        _ => return Err("usage: cargo xtask serve [--port N]".into()),
    };
    setup::web_tools()?;
    build_web(false)?;
    let server = serve::Server::bind(&root().join("dist"), port)?;
    println!("Darkroom is served at {}  (Ctrl+C stops it)", server.url());
    server.run_forever();
    Ok(())
}

/// tests/e2e/*.test.mjs (Node 20's test runner takes files, not globs).
fn e2e_test_files() -> Result<Vec<String>> {
    let dir = root().join("tests/e2e");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("tests/e2e/{name}"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no *.test.mjs files in {}", dir.display()));
    }
    Ok(files)
}

/// `dist/` and the fixtures served on 127.0.0.1, and node's test runner on `files`.
/// `cli_built`: the native tests just built target/debug/darkroom from these sources, so the
/// tests use it as it is instead of building the CLI again (`cargo test` unifies dev-only
/// features, so a plain `cargo build` would rebuild half the workspace).
fn browser_tests(files: &[String], cli_built: bool) -> Result<()> {
    let server =
        serve::Server::bind(&root().join("dist"), 0)?.mount("/fixtures/", &root().join("tests/fixtures"));
    let url = server.url();
    std::thread::spawn(move || server.run_forever());
    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter=spec"]).args(files).env("DARKROOM_URL", &url);
    if cli_built {
        node.env("DARKROOM_CLI_BUILT", "1");
    }
    run(&mut node)
}

/// `cargo xtask e2e [tests/e2e/x.test.mjs …]`: the web build and the browser tests only.
fn e2e_command(args: &[String]) -> Result<()> {
    build_web(true)?;
    let files = if args.is_empty() { e2e_test_files()? } else { args.to_vec() };
    browser_tests(&files, false)
}

/// `cargo xtask soak [--runs N]`: tests/e2e/soak.test.mjs with N generations (200) instead of
/// CI's 12; it prints what could leak after the warm-up round and at the end.
fn soak_command(args: &[String]) -> Result<()> {
    let runs = match args {
        [] => 200,
        [flag, n] if flag == "--runs" => n.parse::<u32>().map_err(|_| format!("--runs {n}: not a count"))?,
        _ => return Err("usage: cargo xtask soak [--runs N]".into()),
    };
    if runs < 8 {
        return Err(format!("--runs {runs}: at least 8 (two rounds of two models at two sizes)"));
    }
    std::env::set_var("SOAK_RUNS", runs.to_string());
    build_web(true)?;
    browser_tests(&["tests/e2e/soak.test.mjs".to_string()], false)
}

fn test_command() -> Result<()> {
    let started = Instant::now();
    let mut stages: Vec<(&str, f64)> = Vec::new();
    let mut stage = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let t = Instant::now();
        println!("\n== {name}");
        let r = f();
        stages.push((name, t.elapsed().as_secs_f64()));
        r
    };

    stage("setup", &mut setup::all)?;
    stage("native tests (naga validation, kernels on the Vulkan adapter, crates)", &mut || {
        // lavapipe warns without it; harmless but noisy.
        let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into());
        run(Command::new("cargo").args(["test", "--workspace"]).env("XDG_RUNTIME_DIR", xdg))
    })?;
    stage("web build (trunk: the product, and the developer pages)", &mut || build_web(true))?;
    stage("browser tests (headless Chromium, WebGPU on SwiftShader)", &mut || {
        browser_tests(&e2e_test_files()?, true)
    })?;

    println!("\n== timings");
    for (name, secs) in &stages {
        println!("{secs:>8.1} s  {name}");
    }
    println!("{:>8.1} s  total", started.elapsed().as_secs_f64());
    Ok(())
}
