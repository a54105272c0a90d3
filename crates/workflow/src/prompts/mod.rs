//! Dynamic prompt templates in sd-dynamic-prompts' syntax, parsed and expanded as its engine
//! (the `dynamicprompts` library) does, so a template a specialist already has gives the same
//! prompts here:
//!
//! - `{a|b|c}` one of the options; options nest (`{a|{b|c}}`); `{0.5::a|2::b}` weights (random
//!   mode); `{2$$a|b|c}` two distinct options joined by `,`; `{2$$ and $$a|b}` another joiner;
//!   `{1-2$$…}`, `{-2$$…}`, `{2-$$…}` ranges; `{~…}` random, `{!…}` combinatorial and `{@…}`
//!   cyclical sampling for one variant.
//! - `__name__` a wildcard (see [`crate::wildcards`]); `__styles/*__` globs; `__~name__`;
//!   `{2$$__name__}` two of its values; `__name(var=value)__` sets variables for its values.
//! - `${v=…}` sets a variable (re-sampled at each use), `${v=!…}` samples it once, `${v?=…}`
//!   only when unset; `${v}` and `${v:default}` use it.
//! - `%{wrapper … text$$inner}` puts `inner` where the wrapper has an ellipsis.
//! - `# comment` to the end of a line (also `//` and `/* … */` where a new part begins).
//!
//! Whitespace is kept as written, except that an option's leading whitespace is dropped
//! (`{ a | b }` gives `a ` and `b `), as the library does.
//!
//! Combinatorial mode lists every combination in the library's order (the first part varies
//! slowest; `{2$$a|b}` gives `a,b` and `b,a`), up to a maximum. Random mode is seeded: prompt
//! `i` of seed `s` is the same on every run and every machine (our own generator, not Python's,
//! so the same seed does not give the library's picks).

mod expand;
mod parse;

use crate::wildcards::Wildcards;
use expand::{Ctx, Rng, Run};
use parse::parse;

/// How a template is expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `count` prompts, each picked at random from seed `seed` (prompt `i` depends on `seed` and
    /// `i` only).
    Random { count: usize, seed: u64 },
    /// Every combination, at most `max`; options marked `~` are picked at random from `seed`.
    Combinatorial { max: usize, seed: u64 },
}

/// The library's default maximum of combinatorial prompts.
pub const DEFAULT_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    #[error("the template cannot be read at character {position}: {message}")]
    Parse { position: usize, message: String },
    #[error("variable `{0}` is used but never set (set it with ${{{0}=…}} or give a default: ${{{0}:…}})")]
    UnknownVariable(String),
    #[error("variable `{0}` refers to itself")]
    RecursiveVariable(String),
    #[error("a variable is set (${{…=…}}) but nothing is written around it")]
    LoneAssignment,
    #[error("in wildcard `{wildcard}`'s value {value:?}: {error}")]
    WildcardValue { wildcard: String, value: String, error: Box<PromptError> },
    #[error("wildcard `{0}` is nested more than {max} deep: a wildcard's values name it again (directly or through others)", max = expand::MAX_WILDCARD_DEPTH)]
    WildcardDepth(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Random,
    Combinatorial,
    Cyclical,
}

impl Method {
    fn nonfinite(self) -> bool {
        self != Method::Combinatorial
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(String),
    Sequence(Vec<Node>),
    Variant { options: Vec<(f64, Node)>, min: usize, max: usize, separator: String, method: Option<Method> },
    Wildcard { path: Box<Node>, method: Option<Method>, variables: Vec<(String, Node)> },
    Assign { name: String, value: Box<Node>, immediate: bool, overwrite: bool },
    Access { name: String, default: Option<Box<Node>> },
    Wrap { wrapper: Box<Node>, inner: Box<Node> },
}

impl Node {
    fn method(&self) -> Option<Method> {
        match self {
            Node::Variant { method, .. } | Node::Wildcard { method, .. } => *method,
            _ => None,
        }
    }
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    root: Option<Node>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, PromptError> {
        if text.is_empty() {
            return Ok(Template { root: None });
        }
        Ok(Template { root: Some(parse(text)?) })
    }

    /// Whether the template is plain text (it expands to itself).
    pub fn is_plain(&self) -> bool {
        matches!(&self.root, Some(Node::Literal(_)))
    }

    /// The prompts the template gives in `mode`; none for an empty template.
    pub fn expand(&self, wildcards: &Wildcards, mode: Mode) -> Result<Vec<String>, PromptError> {
        Ok(self.expand_reporting(wildcards, mode)?.prompts)
    }

    /// `expand`, with the wildcards that matched nothing (they stay in the prompts as written,
    /// `__name__`, as the library leaves them).
    pub fn expand_reporting(&self, wildcards: &Wildcards, mode: Mode) -> Result<Expansion, PromptError> {
        let Some(root) = &self.root else { return Ok(Expansion::default()) };
        let (prompts, run) = match mode {
            Mode::Combinatorial { max, seed } => {
                let mut run = Run::new(wildcards, seed, max);
                let ctx = Ctx::new(Method::Combinatorial);
                let mut out = run.all(root, &ctx)?;
                out.truncate(max);
                (out, run)
            }
            Mode::Random { count, seed } => {
                let mut run = Run::new(wildcards, seed, 1);
                let ctx = Ctx::new(Method::Random);
                let mut out = Vec::new();
                for i in 0..count {
                    run.rng = Rng::new(seed, i as u64);
                    out.push(run.one(root, &ctx)?);
                }
                (out, run)
            }
        };
        Ok(Expansion { prompts, missing: run.missing.into_iter().collect() })
    }
}

/// What a template expanded to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expansion {
    pub prompts: Vec<String>,
    /// Wildcards that matched no collection, by name.
    pub missing: Vec<String>,
}

/// Expands `template` in `mode`.
pub fn expand(template: &str, wildcards: &Wildcards, mode: Mode) -> Result<Vec<String>, PromptError> {
    Template::parse(template)?.expand(wildcards, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_picks_favour_weighted_wildcard_values() {
        let mut w = Wildcards::new();
        w.insert_file("w.yaml", "w: ['3::a', b]\n").unwrap();
        let picks = expand("__w__", &w, Mode::Random { count: 400, seed: 1 }).unwrap();
        let a = picks.iter().filter(|p| *p == "a").count();
        assert!((250..350).contains(&a), "a weight of 3 against 1 picked {a} times of 400");
    }

    fn combos(t: &str) -> Vec<String> {
        expand(t, &Wildcards::new(), Mode::Combinatorial { max: 100, seed: 0 }).unwrap()
    }

    #[test]
    fn the_library_s_own_examples() {
        assert_eq!(combos("{ a | b }"), ["a ", "b "]);
        assert_eq!(combos("a {2$$x|y|z}"), ["a x,y", "a x,z", "a y,x", "a y,z", "a z,x", "a z,y"]);
        assert_eq!(combos("{2$$ and $$a|b}"), ["a and b", "b and a"]);
        assert_eq!(combos("{1-2$$a|b}"), ["a", "b", "a,b", "b,a"]);
        assert_eq!(combos("${c={x|y}} ${c} ${c}"), [" x x", " x y", " y x", " y y"]);
        assert_eq!(combos("${c=!{x|y}} ${c} ${c}"), [" x x"]);
        assert_eq!(combos("a # c\nb"), ["a  \nb"]);
        assert_eq!(combos("{a|b}  # c\nd"), ["a\nd", "b\nd"]);
        assert_eq!(combos("%{A ... B $$ {x|y}}"), ["A x B ", "A y B "]);
        assert_eq!(combos("{a||b}"), ["a", "", "b"]);
        assert_eq!(combos("{2$$a|a|b}"), ["a,b", "b,a"]);
        assert_eq!(combos(""), Vec::<String>::new());
        assert_eq!(combos("{a|{b|c}}d{e|f}"), ["ade", "adf", "bde", "bdf", "cde", "cdf"]);
    }

    #[test]
    fn random_mode_is_reproducible_by_seed_and_weights_steer_it() {
        let w = Wildcards::new();
        let t = "a {red|green|blue} {cat|owl} {2$$x|y|z}";
        let one = expand(t, &w, Mode::Random { count: 20, seed: 7 }).unwrap();
        assert_eq!(one, expand(t, &w, Mode::Random { count: 20, seed: 7 }).unwrap());
        assert_ne!(one, expand(t, &w, Mode::Random { count: 20, seed: 8 }).unwrap());
        // Prompt i depends on the seed and i alone.
        assert_eq!(one[5..10], expand(t, &w, Mode::Random { count: 10, seed: 7 }).unwrap()[5..10]);
        let heavy = expand("{9::a|1::b}", &w, Mode::Random { count: 1000, seed: 1 }).unwrap();
        let a = heavy.iter().filter(|p| *p == "a").count();
        assert!((850..950).contains(&a), "a picked {a} times of 1000 at weight 0.9");
    }

    #[test]
    fn bad_templates_are_errors_naming_the_place() {
        let w = Wildcards::new();
        for t in ["{a|b", "50% off", "${x", "a__b"] {
            assert!(
                matches!(
                    expand(t, &w, Mode::Combinatorial { max: 10, seed: 0 }),
                    Err(PromptError::Parse { .. })
                ),
                "{t}"
            );
        }
        assert_eq!(
            expand("${missing}", &w, Mode::Combinatorial { max: 10, seed: 0 }),
            Err(PromptError::UnknownVariable("missing".into()))
        );
    }
}
