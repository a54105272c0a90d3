//! Workflow tools that need no GPU, shared by the CLI, the engine and the app.
//!
//! - [`prompts`]: dynamic prompt templates in sd-dynamic-prompts' syntax (`{a|b}`, weights,
//!   `{2$$ and $$a|b|c}`, wildcards `__name__`, variables `${v=…}`, wrap `%{…$$…}`), expanded
//!   in random (seeded, reproducible) or combinatorial mode as the `dynamicprompts` library does.
//! - [`wildcards`]: wildcard collections (one value a line, `#` comments) by name, with folders
//!   and globs.
//! - [`styles`]: A1111's `styles.csv`, read, written and applied as A1111 does.
//! - [`grid`]: X/Y/Z plot axes (A1111's value and range syntax) and the labelled grid image.
//! - [`brief`]: briefs (text, constraints, iterations, culling), their files (a zip of PNGs and
//!   a JSON index) and their case studies (an HTML page and a contact sheet).
//! - [`pixels`]: PNG decoding with the declared size checked before any allocation.
//! - [`batch`]: prompts files (A1111's "prompts from file": a prompt a line, or a line of
//!   `--flag value` overrides; JSON-lines recipes) and deterministic shards of them.

pub mod batch;
pub mod brief;
pub mod grid;
pub mod pixels;
pub mod prompts;
pub mod styles;
pub mod wildcards;

pub use prompts::{Expansion, Mode, PromptError, Template};
pub use styles::{Style, Styles};
pub use wildcards::Wildcards;
