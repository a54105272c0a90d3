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
                self.insert_text(&format!("{prefix}{stem}"), &text_of_file(&std::fs::read(&path)?));
            }
        }
        Ok(())
    }

    /// Takes collection `name` away.
    pub fn remove(&mut self, name: &str) {
        self.collections.remove(name);
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

/// The collection a wildcard file gives, by its path below the wildcards folder (`/` or `\\`
/// between folders): the path without `.txt`, as [`Wildcards::from_dir`] names it. `None` for a
/// file that is no wildcard file (not `.txt`, or in a folder or named starting with `.`).
pub fn name_of_file(path: &str) -> Option<String> {
    let path = path.replace('\\', "/");
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (file, folders) = parts.split_last()?;
    if folders.iter().chain([file]).any(|p| p.starts_with('.')) {
        return None;
    }
    let stem = file.strip_suffix(".txt").filter(|s| !s.is_empty())?;
    Some(folders.iter().copied().chain([stem]).collect::<Vec<_>>().join("/"))
}

/// The text of a wildcard file's bytes: invalid UTF-8 dropped, as Python's errors="ignore"
/// does, and a byte-order mark too.
pub fn text_of_file(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).replace('\u{FFFD}', "");
    text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text)
}

/// The wildcard files in a zip (a wildcard pack as shared): (name, text) for every `.txt`
/// entry, named by its path in the zip — without the one folder everything is in, when there
/// is one, as a pack unzipped into the wildcards folder would be.
pub fn files_in_zip(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    use std::io::Read;
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| format!("not a zip file: {e}"))?;
    let mut files = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| format!("a damaged zip entry: {e}"))?;
        if entry.is_dir() {
            continue;
        }
        let path = entry.name().replace('\\', "/");
        if name_of_file(&path).is_none() {
            continue;
        }
        let mut data = Vec::new();
        entry
            .by_ref()
            .take(64 << 20)
            .read_to_end(&mut data)
            .map_err(|e| format!("{path}: cannot be read: {e}"))?;
        files.push((path, text_of_file(&data)));
    }
    let top = |p: &str| p.split('/').next().map(str::to_string);
    let common = files
        .first()
        .and_then(|(p, _)| top(p))
        .filter(|t| files.iter().all(|(p, _)| p.contains('/') && top(p).as_deref() == Some(t.as_str())));
    Ok(files
        .into_iter()
        .filter_map(|(path, text)| {
            let inner = match &common {
                Some(t) => path[t.len() + 1..].to_string(),
                None => path,
            };
            name_of_file(&inner).map(|name| (name, text))
        })
        .collect())
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
    fn files_are_named_by_their_path_without_txt() {
        assert_eq!(name_of_file("colours.txt").as_deref(), Some("colours"));
        assert_eq!(name_of_file("styles\\print.txt").as_deref(), Some("styles/print"));
        assert_eq!(name_of_file("/styles//print.txt").as_deref(), Some("styles/print"));
        assert_eq!(name_of_file("notes.md"), None);
        assert_eq!(name_of_file(".hidden/colours.txt"), None);
        assert_eq!(name_of_file(".txt"), None);
        assert_eq!(text_of_file(b"\xef\xbb\xbfred\n\xffblue"), "red\nblue");
    }

    #[test]
    fn a_zip_pack_gives_its_txt_files_without_the_common_folder() {
        use std::io::Write;
        let zip = |paths: &[&str]| {
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            for p in paths {
                w.start_file(*p, zip::write::SimpleFileOptions::default()).unwrap();
                w.write_all(format!("{p}\n# c\n").as_bytes()).unwrap();
            }
            w.finish().unwrap().into_inner()
        };
        let files =
            files_in_zip(&zip(&["pack/colours.txt", "pack/styles/print.txt", "pack/README.md"])).unwrap();
        let names: Vec<_> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["colours", "styles/print"]);
        assert_eq!(parse_values(&files[1].1), ["pack/styles/print.txt"]);
        let files = files_in_zip(&zip(&["colours.txt", "styles/print.txt"])).unwrap();
        let names: Vec<_> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["colours", "styles/print"]);
        assert!(files_in_zip(b"not a zip").is_err());
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
