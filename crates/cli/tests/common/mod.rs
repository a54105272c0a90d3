//! What the CLI's test files share. Each test file compiles this module on its own and uses
//! part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the `darkroom` binary (lavapipe wants XDG_RUNTIME_DIR set).
pub fn darkroom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()))
        .output()
        .expect("run darkroom")
}
