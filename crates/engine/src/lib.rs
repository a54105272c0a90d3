//! The orchestration every front end shares, with no knowledge of where it runs (no web-sys, no
//! clap): the native CLI and the browser's generation worker are thin adapters over it. They
//! differ only in where bytes come from (a folder, IndexedDB), which the traits of
//! darkroom-pipeline ([`darkroom_pipeline::ModelFiles`], [`darkroom_models::QuantCache`]) and
//! [`LoraSource`] hide.
//!
//! - [`policy`]: which activations and weight formats a model runs with on this adapter.
//! - [`loras`]: a recipe's `<lora:…>` tags resolved to checked LoRA files, and their identity.
//! - [`ModelCache`]: loaded models, keyed by (model, source, precision, LoRAs), kept within a
//!   byte budget of GPU memory ([`policy::model_budget`]), least recently used out first.
//! - [`imports::import`]: a single-file checkpoint into the model store, on a base's configs.
//! - [`job::generate`]: a recipe's batch count as runs, with progress and cancellation.
//! - [`EngineError`]: what failed, by kind (a lost GPU device is its own kind, after which the
//!   front end opens a new device) — the CLI's exit codes and the worker's error kinds
//!   come from it, never from matching message strings.

mod cache;
mod error;
pub mod imports;
pub mod job;
pub mod loras;
pub mod policy;

pub use cache::{ModelCache, ModelKey};
pub use error::EngineError;
pub use loras::LoraSource;
