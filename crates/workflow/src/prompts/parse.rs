//! Parsing: a recursive descent that accepts what the library's grammar accepts, with its
//! whitespace and comment rules.

use super::{Method, Node, PromptError};

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

pub(super) fn parse(text: &str) -> Result<Node, PromptError> {
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
