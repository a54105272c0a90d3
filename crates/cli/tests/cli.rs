//! The `darkroom` binary as a user runs it.

use std::process::Command;

fn darkroom(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()))
        .output()
        .expect("run darkroom");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn info_names_the_adapter_and_its_limits() {
    let (ok, out, err) = darkroom(&["info"]);
    assert!(ok, "{err}");
    let adapter = out.lines().find_map(|l| l.strip_prefix("adapter: ")).expect(&out);
    assert!(!adapter.trim().is_empty());
    let binding: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("maxStorageBufferBindingSize: "))
        .and_then(|v| v.parse().ok())
        .expect(&out);
    assert!(binding >= 128 << 20);
    assert!(out.contains("shader-f16: yes") || out.contains("shader-f16: no"));
}

#[test]
fn selftest_passes_on_an_odd_shape() {
    let (ok, out, err) = darkroom(&["selftest", "--shape", "70x33x129", "--seed", "9"]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("pass: 70x33 · 33x129 matmul"), "{out}");
}

#[test]
fn bad_arguments_are_explained_not_panicked() {
    let (ok, _, err) = darkroom(&["selftest", "--shape", "12x0"]);
    assert!(!ok);
    assert!(err.contains("expected") && !err.contains("panicked"), "{err}");
}
