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

use std::collections::HashMap;

use crate::wildcards::Wildcards;

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

// ---------------------------------------------------------------------------------------------
// Parsing: a recursive descent that accepts what the library's grammar accepts, with its
// whitespace and comment rules.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lit {
    /// Top level: anything but `#{$%`.
    Top,
    /// Inside a variant (and variable values): also not `|` or `}`.
    Variant,
    /// A wildcard's name: not `#{$%()`.
    Wildcard,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Tabs as spaces to the next multiple of 8 columns (the parser the library uses reads its
/// input so).
fn expand_tabs(text: &str) -> Vec<char> {
    let mut out = Vec::new();
    let mut column = 0;
    for c in text.chars() {
        match c {
            '\t' => {
                let n = 8 - column % 8;
                out.extend(std::iter::repeat_n(' ', n));
                column += n;
            }
            '\n' | '\r' => {
                out.push(c);
                column = 0;
            }
            _ => {
                out.push(c);
                column += 1;
            }
        }
    }
    out
}

struct Parser {
    s: Vec<char>,
    pos: usize,
    /// The furthest position a failed alternative reached, for the error message.
    furthest: usize,
}

fn parse(text: &str) -> Result<Node, PromptError> {
    if text.chars().all(char::is_alphanumeric) {
        return Ok(Node::Literal(text.to_string()));
    }
    let mut p = Parser { s: expand_tabs(text), pos: 0, furthest: 0 };
    let node = p.prompt(Lit::Top);
    p.skip_ignorables();
    while p.pos < p.s.len() && is_space(p.s[p.pos]) {
        p.pos += 1;
    }
    if p.pos < p.s.len() {
        let at = p.furthest.max(p.pos);
        let c = p.s[p.pos];
        let message = match c {
            '$' | '%' => format!("a `{c}` that starts nothing (write `{c}{{…}}`, or leave `{c}` out)"),
            '_' => "a `__` that opens a wildcard without closing it".to_string(),
            '{' => "a `{` without its `}`".to_string(),
            _ => format!("unexpected `{c}`"),
        };
        return Err(PromptError::Parse { position: at, message });
    }
    Ok(node)
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }

    fn at(&self, text: &str) -> bool {
        let mut i = self.pos;
        for c in text.chars() {
            if self.s.get(i) != Some(&c) {
                return false;
            }
            i += 1;
        }
        true
    }

    fn eat(&mut self, text: &str) -> bool {
        if self.at(text) {
            self.pos += text.chars().count();
            self.furthest = self.furthest.max(self.pos);
            true
        } else {
            false
        }
    }

    fn fail<T>(&mut self, start: usize) -> Option<T> {
        self.furthest = self.furthest.max(self.pos);
        self.pos = start;
        None
    }

    /// Comments, each with the whitespace before it: `#…` and `//…` to the end of the line,
    /// `/* … */`.
    fn skip_ignorables(&mut self) {
        loop {
            let start = self.pos;
            while self.peek().is_some_and(is_space) {
                self.pos += 1;
            }
            if self.at("#") || self.at("//") {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
            } else if self.at("/*") {
                let mut i = self.pos + 2;
                let mut closed = None;
                while i + 1 < self.s.len() {
                    if self.s[i] == '*' && self.s[i + 1] == '/' {
                        closed = Some(i + 2);
                        break;
                    }
                    i += 1;
                }
                match closed {
                    Some(end) => self.pos = end,
                    None => {
                        self.pos = start;
                        return;
                    }
                }
            } else {
                self.pos = start;
                return;
            }
        }
    }

    /// Optional whitespace (after any comments).
    fn ws(&mut self) {
        self.skip_ignorables();
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
    }

    /// Parts until none matches: one part is itself, several a sequence.
    fn prompt(&mut self, kind: Lit) -> Node {
        let mut parts = Vec::new();
        loop {
            let start = self.pos;
            self.skip_ignorables();
            if kind == Lit::Wildcard && self.peek() == Some('(') {
                self.pos = start;
                break;
            }
            match self.chunk(kind) {
                Some(node) => parts.push(node),
                None => {
                    self.pos = start;
                    break;
                }
            }
        }
        if parts.len() == 1 {
            parts.pop().unwrap()
        } else {
            Node::Sequence(parts)
        }
    }

    fn chunk(&mut self, kind: Lit) -> Option<Node> {
        match kind {
            Lit::Top => self
                .assignment()
                .or_else(|| self.access())
                .or_else(|| self.wrap())
                .or_else(|| self.variants())
                .or_else(|| self.wildcard())
                .or_else(|| self.literals(Lit::Top)),
            Lit::Variant => self
                .access()
                .or_else(|| self.wrap())
                .or_else(|| self.variants())
                .or_else(|| self.wildcard())
                .or_else(|| self.literals(Lit::Variant)),
            Lit::Wildcard => self
                .wildcard_access()
                .or_else(|| self.variants())
                .or_else(|| self.literals(Lit::Wildcard))
                .or_else(|| self.literals(Lit::Variant)),
        }
    }

    fn literal_char(&self, kind: Lit) -> bool {
        let Some(c) = self.peek() else { return false };
        if self.at("__") {
            return false;
        }
        let excluded: &[char] = match kind {
            Lit::Top => &['#', '{', '$', '%'],
            Lit::Variant => &['#', '{', '$', '%', '|', '}'],
            Lit::Wildcard => &['#', '{', '$', '%', ')', '('],
        };
        !excluded.contains(&c)
    }

    fn literal(&mut self, kind: Lit) -> Option<String> {
        let start = self.pos;
        while self.literal_char(kind) {
            self.pos += 1;
        }
        if self.pos == start {
            return None;
        }
        self.furthest = self.furthest.max(self.pos);
        Some(self.s[start..self.pos].iter().collect())
    }

    /// Literal runs separated only by comments, joined by a space.
    fn literals(&mut self, kind: Lit) -> Option<Node> {
        let mut runs = vec![self.literal(kind)?];
        loop {
            let start = self.pos;
            self.skip_ignorables();
            if self.pos == start {
                break;
            }
            match self.literal(kind) {
                Some(run) => runs.push(run),
                None => {
                    self.pos = start;
                    break;
                }
            }
        }
        Some(Node::Literal(runs.join(" ")))
    }

    fn integer(&mut self) -> Option<usize> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return None;
        }
        let digits: String = self.s[start..self.pos].iter().collect();
        // A bound beyond any option count acts as "all of them".
        Some(digits.parse().unwrap_or(usize::MAX))
    }

    fn method(&mut self) -> Option<Method> {
        let m = match self.peek()? {
            '~' => Method::Random,
            '!' => Method::Combinatorial,
            '@' => Method::Cyclical,
            _ => return None,
        };
        self.pos += 1;
        Some(m)
    }

    /// `N$$`, `N-M$$`, `-M$$`, `N-$$`, each optionally followed by `separator$$`.
    fn bounds(&mut self) -> Option<(Option<usize>, Option<usize>, String)> {
        let start = self.pos;
        let lower = self.integer();
        let (lower, upper) = if self.eat("-") {
            let upper = self.integer();
            if lower.is_none() && upper.is_none() {
                return self.fail(start);
            }
            (lower, upper)
        } else {
            match lower {
                Some(n) => (Some(n), Some(n)),
                None => return self.fail(start),
            }
        };
        if !self.eat("$$") {
            return self.fail(start);
        }
        let sep_start = self.pos;
        while self.peek().is_some_and(|c| (c == ' ' || c.is_ascii_graphic()) && !matches!(c, '$' | '{' | '}'))
        {
            self.pos += 1;
        }
        let separator = if self.pos > sep_start && self.at("$$") {
            let s: String = self.s[sep_start..self.pos].iter().collect();
            self.pos += 2;
            s
        } else {
            self.pos = sep_start;
            ",".to_string()
        };
        Some((lower, upper, separator))
    }

    /// A real (`1.5`, `2.`, `.5`, signed) or an integer, followed by `::`.
    fn weight(&mut self) -> Option<f64> {
        let start = self.pos;
        if matches!(self.peek(), Some('+' | '-')) {
            self.pos += 1;
        }
        let digits_start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
            self.pos += 1;
        }
        let text: String = self.s[start..self.pos].iter().collect();
        let body: String = self.s[digits_start..self.pos].iter().collect();
        let dots = body.matches('.').count();
        let valid =
            !body.is_empty() && body != "." && dots <= 1 && (dots == 1 || !text.starts_with(['+', '-']));
        if !valid || !self.eat("::") {
            return self.fail(start);
        }
        text.parse().ok()
    }

    fn variants(&mut self) -> Option<Node> {
        let start = self.pos;
        if !self.eat("{") {
            return None;
        }
        self.ws();
        let method = self.method();
        let bounds = self.bounds();
        self.ws();
        let mut options = Vec::new();
        loop {
            self.ws();
            let weight = self.weight().unwrap_or(1.0);
            let value = self.prompt(Lit::Variant);
            self.ws();
            options.push((weight, value));
            if !self.eat("|") {
                break;
            }
        }
        self.ws();
        if !self.eat("}") {
            return self.fail(start);
        }
        let (min, max, separator) = match bounds {
            None => (1, 1, ",".to_string()),
            Some((lower, upper, separator)) => {
                (lower.unwrap_or(1), upper.unwrap_or(options.len()), separator)
            }
        };
        let (min, max) = (min.min(max), min.max(max));
        Some(Node::Variant { options, min, max, separator, method })
    }

    fn name(&mut self) -> Option<String> {
        let start = self.pos;
        if !self.peek().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '-') {
            return None;
        }
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            self.pos += 1;
        }
        Some(self.s[start..self.pos].iter().collect())
    }

    /// `${ name ` — the start both a variable's assignment and its use share.
    fn variable_head(&mut self) -> Option<String> {
        let start = self.pos;
        if !self.eat("${") {
            return None;
        }
        self.ws();
        let Some(name) = self.name() else { return self.fail(start) };
        self.ws();
        Some(name)
    }

    fn assignment(&mut self) -> Option<Node> {
        let start = self.pos;
        let name = self.variable_head()?;
        let overwrite = !self.eat("?");
        if !self.eat("=") {
            return self.fail(start);
        }
        let immediate = self.eat("!");
        self.ws();
        let value = self.prompt(Lit::Variant);
        self.ws();
        if !self.eat("}") {
            return self.fail(start);
        }
        Some(Node::Assign { name, value: Box::new(value), immediate, overwrite })
    }

    fn access(&mut self) -> Option<Node> {
        let start = self.pos;
        let name = self.variable_head()?;
        let default = if self.eat(":") {
            self.ws();
            Some(Box::new(self.prompt(Lit::Variant)))
        } else {
            None
        };
        self.ws();
        if !self.eat("}") {
            return self.fail(start);
        }
        Some(Node::Access { name, default })
    }

    /// A variable in a wildcard's name: its default is literal text (the name by default).
    fn wildcard_access(&mut self) -> Option<Node> {
        let start = self.pos;
        let Node::Access { name, default } = self.access()? else { unreachable!() };
        let default = match default.as_deref() {
            None => name.clone(),
            Some(Node::Literal(text)) => text.trim().to_string(),
            Some(_) => return self.fail(start),
        };
        Some(Node::Access { name, default: Some(Box::new(Node::Literal(default))) })
    }

    fn wrap(&mut self) -> Option<Node> {
        let start = self.pos;
        if !self.eat("%{") {
            return None;
        }
        self.ws();
        let wrapper = self.prompt(Lit::Variant);
        self.ws();
        if !self.eat("$$") {
            return self.fail(start);
        }
        self.ws();
        let inner = self.prompt(Lit::Variant);
        if !self.eat("}") {
            return self.fail(start);
        }
        Some(Node::Wrap { wrapper: Box::new(wrapper), inner: Box::new(inner) })
    }

    fn wildcard(&mut self) -> Option<Node> {
        let start = self.pos;
        if !self.eat("__") {
            return None;
        }
        let method = self.method();
        // The name: one part at least.
        let path = self.prompt(Lit::Wildcard);
        if matches!(&path, Node::Sequence(parts) if parts.is_empty()) {
            return self.fail(start);
        }
        let mut variables = Vec::new();
        let before_spec = self.pos;
        self.ws();
        if self.eat("(") {
            let spec_start = self.pos;
            while self.peek().is_some_and(|c| c != ')') {
                self.pos += 1;
            }
            if self.pos == spec_start || !self.eat(")") {
                self.pos = before_spec;
            } else {
                let spec: String = self.s[spec_start..self.pos - 1].iter().collect();
                for pair in spec.split(',') {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let value = value.trim();
                    let node = if !value.is_empty() && value.chars().all(char::is_alphanumeric) {
                        Node::Literal(value.to_string())
                    } else {
                        match parse(value) {
                            Ok(node) => node,
                            Err(_) => return self.fail(start),
                        }
                    };
                    variables.push((key.trim().to_string(), node));
                }
            }
        } else {
            self.pos = before_spec;
        }
        if !self.eat("__") {
            return self.fail(start);
        }
        Some(Node::Wildcard { path: Box::new(path), method, variables })
    }
}

// ---------------------------------------------------------------------------------------------
// Expansion.

/// SplitMix64 over (seed, prompt index): small, fast, the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, index: u64) -> Rng {
        let a = Rng(seed).next();
        let b = Rng(index ^ 0x5851_F42D_4C95_7F2D).next();
        Rng(a ^ b.rotate_left(17))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in lo..=hi.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    /// An index picked in proportion to `weights` (uniform when they are all zero or negative).
    fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().map(|w| w.max(0.0)).sum();
        if total <= 0.0 {
            return self.between(0, weights.len() - 1);
        }
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            x -= w.max(0.0);
            if x < 0.0 {
                return i;
            }
        }
        weights.len() - 1
    }
}

#[derive(Clone)]
struct Ctx {
    method: Method,
    variables: HashMap<String, Node>,
    sampling: Vec<String>,
}

impl Ctx {
    fn new(method: Method) -> Ctx {
        Ctx { method, variables: HashMap::new(), sampling: Vec::new() }
    }

    /// The method a node runs with here: a finite one cannot nest inside a non-finite one.
    fn method_for(&self, node: &Node) -> Method {
        match node.method() {
            Some(m) if self.method.nonfinite() && !m.nonfinite() => self.method,
            Some(m) => m,
            None => self.method,
        }
    }

    fn with(&self, method: Method) -> Ctx {
        Ctx { method, ..self.clone() }
    }
}

struct Run<'a> {
    wildcards: &'a Wildcards,
    rng: Rng,
    /// How many results a list needs at most (the combinatorial maximum).
    limit: usize,
    /// Cyclical variants' positions, by the node's address.
    cycles: HashMap<usize, usize>,
    missing: std::collections::BTreeSet<String>,
}

/// Joins results as the library does: one result stays as it is; several are joined and one
/// separator is taken off each end.
fn joined(parts: &[String], separator: &str) -> String {
    if parts.len() == 1 {
        return parts[0].clone();
    }
    let text = parts.join(separator);
    if separator.is_empty() {
        return text;
    }
    let text = text.strip_prefix(separator).unwrap_or(&text);
    text.strip_suffix(separator).unwrap_or(text).to_string()
}

/// The next combination of a product over `lists` (the last varies fastest; random parts,
/// `None`, do not count); `false` after the last.
fn advance(index: &mut [usize], lists: &[Option<Vec<String>>]) -> bool {
    for i in (0..index.len()).rev() {
        if let Some(list) = &lists[i] {
            index[i] += 1;
            if index[i] < list.len() {
                return true;
            }
            index[i] = 0;
        }
    }
    false
}

/// Ordered selections of `k` options, each option at most once (equal options count once).
fn selections(options: &[&Node], k: usize) -> Vec<Vec<usize>> {
    fn go(options: &[&Node], left: &[usize], k: usize, prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k == 0 {
            out.push(prefix.clone());
            return;
        }
        for &i in left {
            let rest: Vec<usize> = left.iter().copied().filter(|&j| options[j] != options[i]).collect();
            prefix.push(i);
            go(options, &rest, k - 1, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    let all: Vec<usize> = (0..options.len()).collect();
    go(options, &all, k, &mut Vec::new(), &mut out);
    out
}

/// Splits a wrapper at its first ellipsis (`...` or longer, or one of the Unicode ellipses).
fn split_wrapper(text: &str) -> (String, String) {
    const MARKS: [char; 7] =
        ['\u{1801}', '\u{2026}', '\u{22ee}', '\u{22ef}', '\u{22f0}', '\u{22f1}', '\u{fe19}'];
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let mut end = i;
        if MARKS.contains(&chars[i]) {
            while end < chars.len() && MARKS.contains(&chars[end]) {
                end += 1;
            }
        } else if chars[i] == '.' {
            while end < chars.len() && chars[end] == '.' {
                end += 1;
            }
            if end - i < 3 {
                end = i;
            }
        }
        if end > i {
            return (chars[..i].iter().collect(), chars[end..].iter().collect());
        }
        i += 1;
    }
    (text.to_string(), String::new())
}

impl<'a> Run<'a> {
    fn new(wildcards: &'a Wildcards, seed: u64, limit: usize) -> Run<'a> {
        Run {
            wildcards,
            rng: Rng::new(seed, u64::MAX),
            limit: limit.max(1),
            cycles: HashMap::new(),
            missing: Default::default(),
        }
    }

    /// A sequence's variable assignments, each evaluated in the context the sequence starts
    /// with (so `${a?=…}` sees only variables set outside it), as the library does.
    fn assignments(&mut self, tokens: &[Node], ctx: &Ctx) -> Result<(Vec<Node>, Ctx), PromptError> {
        let mut set = Vec::new();
        let mut rest = Vec::new();
        for token in tokens {
            match token {
                Node::Assign { name, value, immediate, overwrite } => {
                    let value = match ctx.variables.get(name) {
                        Some(existing) if !*overwrite => existing.clone(),
                        _ if *immediate && !matches!(**value, Node::Literal(_)) => {
                            let first = match ctx.method_for(value) {
                                Method::Combinatorial => {
                                    self.all(value, ctx)?.into_iter().next().unwrap_or_default()
                                }
                                _ => self.one(value, ctx)?,
                            };
                            Node::Literal(first)
                        }
                        _ => (**value).clone(),
                    };
                    set.push((name.clone(), value));
                }
                other => rest.push(other.clone()),
            }
        }
        let mut ctx = ctx.clone();
        ctx.variables.extend(set);
        Ok((rest, ctx))
    }

    fn variable<'n>(
        &self,
        name: &str,
        default: &'n Option<Box<Node>>,
        ctx: &'n Ctx,
    ) -> Result<(Node, Ctx), PromptError> {
        if ctx.sampling.iter().any(|v| v == name) {
            return Err(PromptError::RecursiveVariable(name.to_string()));
        }
        let node = match ctx.variables.get(name) {
            Some(node) => node.clone(),
            None => match default {
                Some(node) => (**node).clone(),
                None => return Err(PromptError::UnknownVariable(name.to_string())),
            },
        };
        let mut inner = ctx.clone();
        inner.sampling.push(name.to_string());
        Ok((node, inner))
    }

    /// A wildcard's name as text: its first (combinatorial) or one (random) expansion.
    fn wildcard_name(&mut self, path: &Node, ctx: &Ctx) -> Result<String, PromptError> {
        match ctx.method {
            Method::Combinatorial => Ok(self.all(path, ctx)?.into_iter().next().unwrap_or_default()),
            _ => self.one(path, ctx),
        }
    }

    fn wildcard_values(
        &mut self,
        path: &Node,
        variables: &[(String, Node)],
        ctx: &Ctx,
    ) -> Result<(String, Vec<String>, Ctx), PromptError> {
        let name = self.wildcard_name(path, ctx)?;
        let mut ctx = ctx.clone();
        for (k, v) in variables {
            ctx.variables.insert(k.clone(), v.clone());
        }
        let values = self.wildcards.values(&name);
        if values.is_empty() {
            self.missing.insert(name.clone());
        }
        Ok((name, values, ctx))
    }

    fn parse_value(wildcard: &str, value: &str) -> Result<Node, PromptError> {
        parse(value).map_err(|error| PromptError::WildcardValue {
            wildcard: wildcard.to_string(),
            value: value.to_string(),
            error: Box::new(error),
        })
    }

    fn wrapped(name: &str) -> String {
        let mut w = name.to_string();
        if !w.starts_with("__") {
            w = format!("__{w}");
        }
        if !w.ends_with("__") {
            w.push_str("__");
        }
        w
    }

    /// A variant whose only option is a wildcard becomes a variant over its values.
    fn wildcard_variant(&mut self, node: &Node, ctx: &Ctx) -> Result<Option<(Node, Ctx)>, PromptError> {
        let Node::Variant { options, min, max, separator, .. } = node else { return Ok(None) };
        let [(_, Node::Wildcard { path, method, variables })] = options.as_slice() else { return Ok(None) };
        let (name, values, inner) = self.wildcard_values(path, variables, ctx)?;
        let n = values.len();
        let mut parsed = Vec::new();
        for v in &values {
            parsed.push((1.0, Self::parse_value(&name, v)?));
        }
        let variant = Node::Variant {
            options: parsed,
            min: (*min).min(n),
            max: (*max).min(n),
            separator: separator.clone(),
            method: *method,
        };
        Ok(Some((variant, inner)))
    }

    /// Every expansion of `node` (combinatorial), at most `limit`; a node sampled at random
    /// here gives `limit` picks, as the library's endless generator cut at the maximum does.
    fn all(&mut self, node: &Node, ctx: &Ctx) -> Result<Vec<String>, PromptError> {
        let method = ctx.method_for(node);
        if method.nonfinite() {
            let inner = ctx.with(method);
            return (0..self.limit).map(|_| self.one(node, &inner)).collect();
        }
        let ctx = &ctx.with(method);
        match node {
            Node::Literal(text) => Ok(vec![text.clone()]),
            Node::Sequence(tokens) => {
                let (tokens, ctx) = self.assignments(tokens, ctx)?;
                // Finite parts multiply (the first varies slowest); random ones are picked
                // anew for each combination.
                let mut lists: Vec<Option<Vec<String>>> = Vec::new();
                for t in &tokens {
                    if ctx.method_for(t).nonfinite() {
                        lists.push(None);
                    } else {
                        lists.push(Some(self.all(t, &ctx)?));
                    }
                }
                if lists.iter().any(|l| l.as_ref().is_some_and(Vec::is_empty)) {
                    return Ok(Vec::new());
                }
                let mut out = Vec::new();
                let mut index = vec![0usize; tokens.len()];
                loop {
                    let mut text = String::new();
                    for (i, t) in tokens.iter().enumerate() {
                        match &lists[i] {
                            Some(list) => text.push_str(&list[index[i]]),
                            None => {
                                let inner = ctx.with(ctx.method_for(t));
                                text.push_str(&self.one(t, &inner)?);
                            }
                        }
                    }
                    out.push(text);
                    if out.len() >= self.limit || !advance(&mut index, &lists) {
                        break;
                    }
                }
                Ok(out)
            }
            Node::Variant { options, min, max, separator, .. } => {
                if options.is_empty() {
                    return Ok(Vec::new());
                }
                if let Some((variant, inner)) = self.wildcard_variant(node, ctx)? {
                    return self.all(&variant, &inner);
                }
                let values: Vec<&Node> = options.iter().map(|(_, v)| v).collect();
                let (min, max) = ((*min).min(values.len()), (*max).min(values.len()));
                let mut expansions: HashMap<usize, Vec<String>> = HashMap::new();
                let mut seen = std::collections::HashSet::new();
                let mut out = Vec::new();
                for bound in min..=max {
                    for combo in selections(&values, bound) {
                        let mut lists = Vec::new();
                        for &i in &combo {
                            if !expansions.contains_key(&i) && !ctx.method_for(values[i]).nonfinite() {
                                let list = self.all(values[i], ctx)?;
                                expansions.insert(i, list);
                            }
                            lists.push(expansions.get(&i).cloned());
                        }
                        if lists.iter().any(|l| l.as_ref().is_some_and(Vec::is_empty)) {
                            continue;
                        }
                        let mut index = vec![0usize; combo.len()];
                        loop {
                            let mut parts: Vec<String> = Vec::new();
                            for (k, &i) in combo.iter().enumerate() {
                                let part = match &lists[k] {
                                    Some(list) => list[index[k]].clone(),
                                    None => self.one(values[i], &ctx.with(ctx.method_for(values[i])))?,
                                };
                                if !parts.contains(&part) {
                                    parts.push(part);
                                }
                            }
                            if parts.len() == bound && seen.insert(parts.clone()) {
                                out.push(joined(&parts, separator));
                                if out.len() >= self.limit {
                                    return Ok(out);
                                }
                            }
                            if !advance(&mut index, &lists) {
                                break;
                            }
                        }
                    }
                }
                Ok(out)
            }
            Node::Wildcard { path, variables, .. } => {
                let (name, values, inner) = self.wildcard_values(path, variables, ctx)?;
                if values.is_empty() {
                    return Ok(vec![Self::wrapped(&name); self.limit]);
                }
                let mut out = Vec::new();
                for v in &values {
                    let node = Self::parse_value(&name, v)?;
                    out.extend(self.all(&node, &inner)?);
                    if out.len() >= self.limit {
                        out.truncate(self.limit);
                        break;
                    }
                }
                Ok(out)
            }
            Node::Access { name, default } => {
                let (node, inner) = self.variable(name, default, ctx)?;
                self.all(&node, &inner)
            }
            Node::Wrap { wrapper, inner } => {
                let wrappers = self.all(wrapper, ctx)?;
                let inners = self.all(inner, ctx)?;
                let mut out = Vec::new();
                for w in &wrappers {
                    let (prefix, suffix) = split_wrapper(w);
                    for i in &inners {
                        out.push(format!("{prefix}{i}{suffix}"));
                        if out.len() >= self.limit {
                            return Ok(out);
                        }
                    }
                }
                Ok(out)
            }
            Node::Assign { .. } => Err(PromptError::LoneAssignment),
        }
    }

    /// One pick of `node` (random or cyclical).
    fn one(&mut self, node: &Node, ctx: &Ctx) -> Result<String, PromptError> {
        let method = ctx.method_for(node);
        match node {
            Node::Literal(text) => Ok(text.clone()),
            Node::Sequence(tokens) => {
                let (tokens, ctx) = self.assignments(tokens, ctx)?;
                let mut parts = Vec::new();
                for t in &tokens {
                    parts.push(self.one(t, &ctx)?);
                }
                Ok(joined(&parts, ""))
            }
            Node::Variant { options, min, max, separator, .. } => {
                if let Some((variant, inner)) = self.wildcard_variant(node, ctx)? {
                    return self.one(&variant, &inner);
                }
                if options.len() == 1 {
                    return self.one(&options[0].1, ctx);
                }
                if options.is_empty() {
                    return Ok(String::new());
                }
                let (min, max) = ((*min).min(options.len()), (*max).min(options.len()));
                if method == Method::Cyclical {
                    let values: Vec<&Node> = options.iter().map(|(_, v)| v).collect();
                    let combos: Vec<Vec<usize>> = (min..=max).flat_map(|b| selections(&values, b)).collect();
                    if combos.is_empty() {
                        return Ok(String::new());
                    }
                    let slot = self.cycles.entry(node as *const Node as usize).or_insert(0);
                    let combo = combos[*slot % combos.len()].clone();
                    *slot += 1;
                    let mut parts = Vec::new();
                    for i in combo {
                        parts.push(self.one(values[i], ctx)?);
                    }
                    return Ok(joined(&parts, separator));
                }
                let count = self.rng.between(min, max);
                let mut left: Vec<usize> = (0..options.len()).collect();
                let mut chosen = Vec::new();
                for _ in 0..count {
                    let weights: Vec<f64> = left.iter().map(|&i| options[i].0).collect();
                    let k = self.rng.weighted(&weights);
                    chosen.push(left.remove(k));
                }
                if chosen.is_empty() {
                    return Ok(String::new());
                }
                let mut parts = Vec::new();
                for i in chosen {
                    parts.push(self.one(&options[i].1, ctx)?);
                }
                Ok(joined(&parts, separator))
            }
            Node::Wildcard { path, variables, .. } => {
                let (name, values, inner) = self.wildcard_values(path, variables, ctx)?;
                if values.is_empty() {
                    return Ok(Self::wrapped(&name));
                }
                let pick = match method {
                    Method::Cyclical => {
                        let slot = self.cycles.entry(node as *const Node as usize).or_insert(0);
                        *slot += 1;
                        (*slot - 1) % values.len()
                    }
                    _ => self.rng.between(0, values.len() - 1),
                };
                let node = Self::parse_value(&name, &values[pick])?;
                self.one(&node, &inner)
            }
            Node::Access { name, default } => {
                let (node, inner) = self.variable(name, default, ctx)?;
                self.one(&node, &inner)
            }
            Node::Wrap { wrapper, inner } => {
                let (prefix, suffix) = split_wrapper(&self.one(wrapper, ctx)?);
                Ok(format!("{prefix}{}{suffix}", self.one(inner, ctx)?))
            }
            Node::Assign { .. } => Err(PromptError::LoneAssignment),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
