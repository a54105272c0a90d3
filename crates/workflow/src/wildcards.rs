//! Wildcard collections: a name (a text file's path below the wildcards folder, without `.txt`,
//! with `/` between folders) and its values, one a line. Lines are trimmed; empty lines and
//! lines starting with `#` are skipped. A wildcard names one collection or matches several with
//! a glob (`__styles/*__`, `*` crossing folders as in Python's fnmatch); a name found nowhere is
//! looked up again in every folder (`**/name`). The values of every match are merged, duplicates
//! dropped and sorted — as the `dynamicprompts` library's wildcard manager does.

use std::collections::BTreeMap;
use std::path::Path;

/// Every known collection, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wildcards {
    collections: BTreeMap<String, Vec<String>>,
}

/// The values of a wildcard file's text.
pub fn parse_values(text: &str) -> Vec<String> {
    // Python's universal newlines: \r\n and \r end lines too.
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

impl Wildcards {
    pub fn new() -> Wildcards {
        Wildcards::default()
    }

    /// Adds (or replaces) collection `name` with the values of a file's `text`.
    pub fn insert_text(&mut self, name: &str, text: &str) {
        self.collections.insert(name.to_string(), parse_values(text));
    }

    /// Every `.txt` file below `dir` (folders starting with `.` skipped), named by its path.
    pub fn from_dir(dir: &Path) -> std::io::Result<Wildcards> {
        let mut out = Wildcards::new();
        out.add_dir(dir, "")?;
        Ok(out)
    }

    fn add_dir(&mut self, dir: &Path, prefix: &str) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') {
                    self.add_dir(&path, &format!("{prefix}{name}/"))?;
                }
            } else if let Some(stem) = name.strip_suffix(".txt") {
                // Invalid UTF-8 is dropped, as Python's errors="ignore" does.
                let bytes = std::fs::read(&path)?;
                let text = String::from_utf8_lossy(&bytes).replace('\u{FFFD}', "");
                self.insert_text(&format!("{prefix}{stem}"), &text);
            }
        }
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.collections.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.collections.is_empty()
    }

    /// The values of every collection `wildcard` (with or without its `__` wrapping) names or
    /// matches: merged, without duplicates, sorted. Empty when nothing matches.
    pub fn values(&self, wildcard: &str) -> Vec<String> {
        let Some(pattern) = clean(wildcard) else { return Vec::new() };
        let mut values = self.matching(&pattern);
        if values.is_empty() && !pattern.starts_with("**") {
            values = self.matching(&format!("**/{pattern}"));
        }
        let mut seen = std::collections::HashSet::new();
        values.retain(|v| seen.insert(v.clone()));
        values.sort();
        values
    }

    fn matching(&self, pattern: &str) -> Vec<String> {
        let pattern: Vec<char> = pattern.chars().collect();
        let mut out = Vec::new();
        for (name, values) in &self.collections {
            let name: Vec<char> = name.chars().collect();
            if glob(&pattern, &name) {
                out.extend(values.iter().cloned());
            }
        }
        out
    }
}

/// The wildcard's name without its `__` wrapping, with `/` as the only separator and none at
/// either end; `None` for a name climbing out of the folder (`..`).
fn clean(wildcard: &str) -> Option<String> {
    let w = wildcard.strip_prefix("__").unwrap_or(wildcard);
    let w = w.strip_suffix("__").unwrap_or(w);
    let mut out = String::new();
    let mut last_sep = false;
    for c in w.chars() {
        if c == '/' || c == '\\' {
            if !last_sep {
                out.push('/');
            }
            last_sep = true;
        } else {
            out.push(c);
            last_sep = false;
        }
    }
    let out = out.trim_matches('/').to_string();
    (!out.contains("..")).then_some(out)
}

/// Python's fnmatch (case-sensitive, as on POSIX): `*` any run (slashes included), `?` one
/// character, `[abc]`, `[a-z]`, `[!abc]`; the whole name must match.
fn glob(pattern: &[char], name: &[char]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|skip| glob(&pattern[1..], &name[skip..])),
        Some('?') => !name.is_empty() && glob(&pattern[1..], &name[1..]),
        Some('[') => match class(pattern) {
            Some((matches, len)) => !name.is_empty() && matches(name[0]) && glob(&pattern[len..], &name[1..]),
            // An unclosed bracket is a literal '['.
            None => name.first() == Some(&'[') && glob(&pattern[1..], &name[1..]),
        },
        Some(&c) => name.first() == Some(&c) && glob(&pattern[1..], &name[1..]),
    }
}

type Class = Box<dyn Fn(char) -> bool>;

/// A bracket expression at the start of `pattern`: its test and its length.
fn class(pattern: &[char]) -> Option<(Class, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some('!'));
    if negate {
        i += 1;
    }
    let start = i;
    // A ']' right after the opening (or after '!') is a member.
    if pattern.get(i) == Some(&']') {
        i += 1;
    }
    while pattern.get(i).is_some_and(|&c| c != ']') {
        i += 1;
    }
    if i >= pattern.len() {
        return None;
    }
    let members: Vec<char> = pattern[start..i].to_vec();
    let test = move |c: char| {
        let mut j = 0;
        let mut hit = false;
        while j < members.len() {
            if j + 2 < members.len() && members[j + 1] == '-' {
                hit |= members[j] <= c && c <= members[j + 2];
                j += 3;
            } else {
                hit |= members[j] == c;
                j += 1;
            }
        }
        hit != negate
    };
    Some((Box::new(test), i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str, n: &str) -> bool {
        glob(&p.chars().collect::<Vec<_>>(), &n.chars().collect::<Vec<_>>())
    }

    #[test]
    fn globs_match_as_fnmatch() {
        assert!(g("styles/*", "styles/print"));
        assert!(g("*", "styles/print"), "* crosses folders");
        assert!(g("**/print", "styles/print"));
        assert!(!g("**/print", "print"));
        assert!(g("colo?rs", "colours"));
        assert!(g("[a-c]at", "bat") && !g("[!a-c]at", "bat") && g("[!a-c]at", "rat"));
        assert!(g("a[", "a["));
        assert!(!g("styles/*", "other/print"));
    }

    #[test]
    fn files_skip_comments_and_blank_lines_and_values_merge_sorted() {
        let mut w = Wildcards::new();
        w.insert_text("colors", "red\n# a comment\n\n  blue  \r\ngreen\nred\n");
        w.insert_text("styles/print", "ink\nwatercolor\n");
        w.insert_text("styles/screen", "neon\nink\n");
        assert_eq!(w.values("colors"), ["blue", "green", "red"]);
        assert_eq!(w.values("__colors__"), ["blue", "green", "red"]);
        assert_eq!(w.values("styles/*"), ["ink", "neon", "watercolor"]);
        assert_eq!(w.values("print"), ["ink", "watercolor"], "found in a folder by its file name");
        assert_eq!(w.values("/styles\\\\print/"), ["ink", "watercolor"]);
        assert!(w.values("../colors").is_empty());
        assert!(w.values("missing").is_empty());
    }
}
