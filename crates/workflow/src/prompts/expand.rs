//! Expansion: every combination in the library's order (combinatorial), or one pick at a
//! time from our seeded generator (random, cyclical).

use std::collections::HashMap;

use super::parse::parse;
use super::{Method, Node, PromptError};
use crate::wildcards::{Item, Wildcards};

/// SplitMix64 over (seed, prompt index): small, fast, the same everywhere.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64, index: u64) -> Rng {
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
pub(super) struct Ctx {
    method: Method,
    variables: HashMap<String, Node>,
    sampling: Vec<String>,
    /// Wildcards expanded on the way here (a wildcard's value naming itself would otherwise
    /// recurse until the stack runs out).
    depth: usize,
}

/// How deeply wildcards may nest in one another's values.
pub const MAX_WILDCARD_DEPTH: usize = 24;

impl Ctx {
    pub(super) fn new(method: Method) -> Ctx {
        Ctx { method, variables: HashMap::new(), sampling: Vec::new(), depth: 0 }
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

pub(super) struct Run<'a> {
    wildcards: &'a Wildcards,
    pub(super) rng: Rng,
    /// How many results a list needs at most (the combinatorial maximum).
    limit: usize,
    /// Cyclical variants' positions, by the node's address.
    cycles: HashMap<usize, usize>,
    pub(super) missing: std::collections::BTreeSet<String>,
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
    pub(super) fn new(wildcards: &'a Wildcards, seed: u64, limit: usize) -> Run<'a> {
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
    ) -> Result<(String, Vec<Item>, Ctx), PromptError> {
        let name = self.wildcard_name(path, ctx)?;
        if ctx.depth >= MAX_WILDCARD_DEPTH {
            return Err(PromptError::WildcardDepth(name));
        }
        let mut ctx = ctx.clone();
        ctx.depth += 1;
        for (k, v) in variables {
            ctx.variables.insert(k.clone(), v.clone());
        }
        let values = self.wildcards.items(&name);
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
        // Each value as many times as its weight (rounded down), as the library lists them;
        // the bounds count the values once.
        let n = values.len();
        let mut parsed = Vec::new();
        for v in repeated(&values) {
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
    pub(super) fn all(&mut self, node: &Node, ctx: &Ctx) -> Result<Vec<String>, PromptError> {
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
                for v in repeated(&values) {
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
    pub(super) fn one(&mut self, node: &Node, ctx: &Ctx) -> Result<String, PromptError> {
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
                let text = match method {
                    Method::Cyclical => {
                        // Over the values repeated by weight, as the library cycles them.
                        let list = repeated(&values);
                        if list.is_empty() {
                            return Ok(String::new());
                        }
                        let slot = self.cycles.entry(node as *const Node as usize).or_insert(0);
                        *slot += 1;
                        list[(*slot - 1) % list.len()]
                    }
                    _ if values.iter().all(|v| v.weight() == values[0].weight()) => {
                        &values[self.rng.between(0, values.len() - 1)].text
                    }
                    _ => {
                        let weights: Vec<f64> = values.iter().map(Item::weight).collect();
                        &values[self.rng.weighted(&weights)].text
                    }
                };
                let node = Self::parse_value(&name, text)?;
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

/// Each value's text as many times as its weight rounded down (a weight below 1 drops it), as
/// the library's combinatorial and cyclical samplers list a collection.
fn repeated(values: &[Item]) -> Vec<&str> {
    values
        .iter()
        .flat_map(|v| std::iter::repeat_n(v.text.as_str(), v.weight().max(0.0).min(1e6) as usize))
        .collect()
}
