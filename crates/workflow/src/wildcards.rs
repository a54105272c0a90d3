//! Wildcard collections: a name (a text file's path below the wildcards folder, without `.txt`,
//! with `/` between folders) and its values, one a line. Lines are trimmed; empty lines and
//! lines starting with `#` are skipped. A wildcard names one collection or matches several with
//! a glob (`__styles/*__`, `*` crossing folders as in Python's fnmatch); a name found nowhere is
//! looked up again in every folder (`**/name`). The values of every match are merged, duplicates
//! dropped and sorted — as the `dynamicprompts` library's wildcard manager does.
//!
//! Structured files (`.json`, `.yaml`) hold many collections, as that library reads them: a
//! mapping's keys name collections below the file's folder (nested mappings add `/key`), a
//! key's value is a list of values or one string; a file that is a list is one collection named
//! by its path. A value may carry a weight, `"2::text"` or `{"text": …, "weight": 2}`: random
//! picks favour it, and a combinatorial expansion repeats it (its weight rounded down) times.

use std::collections::BTreeMap;
use std::path::Path;

/// One value of a collection, with its weight when the file gave one.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub text: String,
    pub weight: Option<f64>,
}

impl Item {
    fn plain(text: impl Into<String>) -> Item {
        Item { text: text.into(), weight: None }
    }

    pub fn weight(&self) -> f64 {
        self.weight.unwrap_or(1.0)
    }
}

/// Every known collection, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wildcards {
    collections: BTreeMap<String, Vec<Item>>,
    /// Structured files [`Wildcards::from_dir`] left out because they do not read, with why
    /// (the library leaves them out too; a caller shows them as warnings).
    pub unreadable: Vec<(String, String)>,
}

/// Python's truthiness of a JSON/YAML value: null, false, 0, "", [] and {} are false.
fn truthy(v: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match v {
        V::Null => false,
        V::Bool(b) => *b,
        V::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        V::String(s) => !s.is_empty(),
        V::Array(a) => !a.is_empty(),
        V::Object(o) => !o.is_empty(),
    }
}

/// Python's `float()` of a text: surrounding whitespace allowed, `_` between digits.
fn python_float(text: &str) -> Option<f64> {
    let t = text.trim();
    if t.starts_with('_') || t.ends_with('_') || t.contains("__") {
        return None;
    }
    t.replace('_', "").parse().ok()
}

/// A structured file's list as the library reads it: falsy entries skipped; `"W::text"` with
/// a number W (the text starting with a digit) weighted; `{"text"|"content": …, "weight": W}`;
/// anything else left out. `None` when a weight is not a number (the library drops the key).
fn structured_items(list: &[serde_json::Value]) -> Option<Vec<Item>> {
    use serde_json::Value as V;
    let mut out = Vec::new();
    for item in list.iter().filter(|v| truthy(v)) {
        match item {
            V::String(s) => {
                let weighted = s.chars().next().is_some_and(|c| c.is_numeric()) && s.contains("::");
                match s
                    .rsplit_once("::")
                    .filter(|_| weighted)
                    .and_then(|(w, text)| Some((python_float(w)?, text)))
                {
                    Some((weight, text)) => out.push(Item { text: text.to_string(), weight: Some(weight) }),
                    None => out.push(Item::plain(s.as_str())),
                }
            }
            V::Object(map) => {
                let weight = match map.get("weight") {
                    None => 1.0,
                    Some(V::Number(n)) => n.as_f64()?,
                    Some(V::String(w)) => python_float(w)?,
                    Some(V::Bool(b)) => f64::from(u8::from(*b)),
                    Some(_) => return None,
                };
                let text = ["text", "content"]
                    .iter()
                    .filter_map(|k| map.get(*k))
                    .find(|v| truthy(v))
                    .and_then(|v| v.as_str());
                if let Some(text) = text.filter(|t| !t.is_empty()) {
                    out.push(Item { text: text.to_string(), weight: (weight != 1.0).then_some(weight) });
                }
            }
            _ => {}
        }
    }
    Some(out)
}

/// A YAML document as JSON values (mappings with keys that are not text lose those keys, as
/// the library skips them).
fn yaml_to_json(y: &yaml_rust2::Yaml) -> serde_json::Value {
    use serde_json::Value as V;
    use yaml_rust2::Yaml as Y;
    match y {
        Y::Real(r) => r.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(V::Null, V::Number),
        Y::Integer(i) => V::Number((*i).into()),
        Y::String(s) => V::String(s.clone()),
        Y::Boolean(b) => V::Bool(*b),
        Y::Array(a) => V::Array(a.iter().map(yaml_to_json).collect()),
        Y::Hash(h) => V::Object(
            h.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), yaml_to_json(v)))).collect(),
        ),
        _ => V::Null,
    }
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
        self.collections.insert(name.to_string(), parse_values(text).into_iter().map(Item::plain).collect());
    }

    /// Adds a wildcard file by its path below the wildcards folder (`/` between folders): a
    /// `.json` or `.yaml` file's collections, or a `.txt` file's values (a path without an
    /// extension is a `.txt` file's name). A structured file that does not read is an error.
    pub fn insert_file(&mut self, path: &str, text: &str) -> Result<(), String> {
        let path = path.replace('\\', "/");
        let (folder, file) = path.rsplit_once('/').map_or(("", path.as_str()), |(d, f)| (d, f));
        let structured = if let Some(stem) = file.strip_suffix(".json") {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("{path}: {e}"))?;
            Some((stem, value))
        } else if let Some(stem) = file.strip_suffix(".yaml") {
            let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| format!("{path}: {e}"))?;
            Some((stem, docs.first().map_or(serde_json::Value::Null, yaml_to_json)))
        } else {
            None
        };
        match structured {
            Some((stem, value)) => self.insert_structured(folder, stem, &value),
            None => self.insert_text(path.strip_suffix(".txt").unwrap_or(&path), text),
        }
        Ok(())
    }

    /// A structured file's collections: a mapping's keys below `folder`, a list as `folder/stem`.
    fn insert_structured(&mut self, folder: &str, stem: &str, value: &serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                let prefix = if folder.is_empty() { String::new() } else { format!("{folder}/") };
                self.insert_mapping(&prefix, map);
            }
            serde_json::Value::Array(list) => {
                // Only its texts, unweighted (empty ones too), as the library takes them.
                let items: Vec<Item> = list.iter().filter_map(|v| v.as_str()).map(Item::plain).collect();
                if !items.is_empty() {
                    let name = if folder.is_empty() { stem.to_string() } else { format!("{folder}/{stem}") };
                    self.collections.insert(name, items);
                }
            }
            _ => {}
        }
    }

    fn insert_mapping(&mut self, prefix: &str, map: &serde_json::Map<String, serde_json::Value>) {
        for (key, value) in map {
            if !truthy(value) {
                continue;
            }
            let name = format!("{prefix}{key}");
            let items = match value {
                serde_json::Value::String(s) => structured_items(&[serde_json::Value::String(s.clone())]),
                serde_json::Value::Array(list) => structured_items(list),
                serde_json::Value::Object(inner) => {
                    self.insert_mapping(&format!("{name}/"), inner);
                    continue;
                }
                _ => continue,
            };
            if let Some(items) = items {
                self.collections.insert(name, items);
            }
        }
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
            } else if name.ends_with(".json") || name.ends_with(".yaml") {
                // A structured file that does not read is left out, as the library leaves it.
                if let Err(why) =
                    self.insert_file(&format!("{prefix}{name}"), &text_of_file(&std::fs::read(&path)?))
                {
                    self.unreadable.push((path.display().to_string(), why));
                }
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
        self.items(wildcard).into_iter().map(|i| i.text).collect()
    }

    /// [`Wildcards::values`] with their weights (a weighted value and the same text unweighted
    /// are two values, as in the library).
    pub fn items(&self, wildcard: &str) -> Vec<Item> {
        let Some(pattern) = clean(wildcard) else { return Vec::new() };
        let mut values = self.matching(&pattern);
        if values.is_empty() && !pattern.starts_with("**") {
            values = self.matching(&format!("**/{pattern}"));
        }
        let mut seen = std::collections::HashSet::new();
        values.retain(|v| seen.insert((v.text.clone(), v.weight.map(f64::to_bits))));
        values.sort_by(|a, b| a.text.cmp(&b.text));
        values
    }

    fn matching(&self, pattern: &str) -> Vec<Item> {
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

/// The name a wildcard file is kept under, by its path below the wildcards folder (`/` or `\\`
/// between folders): a `.txt` file's collection (the path without `.txt`, as
/// [`Wildcards::from_dir`] names it), a `.json` or `.yaml` file's path as it is (it names its
/// collections itself; see [`Wildcards::insert_file`]). `None` for a file that is no wildcard
/// file (another kind, or in a folder or named starting with `.`).
pub fn name_of_file(path: &str) -> Option<String> {
    let path = path.replace('\\', "/");
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (file, folders) = parts.split_last()?;
    if folders.iter().chain([file]).any(|p| p.starts_with('.')) {
        return None;
    }
    let stem = match file.strip_suffix(".txt") {
        Some(stem) => stem,
        None if file.ends_with(".json") || file.ends_with(".yaml") => file,
        None => return None,
    };
    (!stem.is_empty()).then(|| folders.iter().copied().chain([stem]).collect::<Vec<_>>().join("/"))
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
    fn structured_files_give_their_collections_with_weights() {
        let mut w = Wildcards::new();
        let json = r#"{"animals": {"pets": ["cat", "2::dog", {"text": "owl", "weight": 0.5}, "", null, 3]},
                       "one": "solo", "bad": {"weights": [{"text": "x", "weight": "heavy"}]}}"#;
        w.insert_file("packs/zoo.json", json).unwrap();
        w.insert_file("lists/lines.yaml", "- a\n- b\n").unwrap();
        w.insert_file("moods.yaml", "calm: [still]\nloud:\n  deep: ['3::roar']\n").unwrap();
        w.insert_file("plain", "x\ny\n").unwrap();
        let names: Vec<&str> = w.names().collect();
        assert_eq!(names, ["calm", "lists/lines", "loud/deep", "packs/animals/pets", "packs/one", "plain"]);
        let pets = w.items("pets");
        let pairs: Vec<(&str, f64)> = pets.iter().map(|i| (i.text.as_str(), i.weight())).collect();
        assert_eq!(pairs, [("cat", 1.0), ("dog", 2.0), ("owl", 0.5)]);
        assert_eq!(w.values("loud/deep"), ["roar"]);
        assert!(w.insert_file("broken.json", "{").unwrap_err().starts_with("broken.json:"));
        assert!(w.insert_file("broken.yaml", "a: [").is_err());
    }

    #[test]
    fn files_are_named_by_their_path_without_txt() {
        assert_eq!(name_of_file("colours.txt").as_deref(), Some("colours"));
        assert_eq!(name_of_file("styles\\print.txt").as_deref(), Some("styles/print"));
        assert_eq!(name_of_file("/styles//print.txt").as_deref(), Some("styles/print"));
        assert_eq!(name_of_file("notes.md"), None);
        assert_eq!(name_of_file("packs\\zoo.json").as_deref(), Some("packs/zoo.json"));
        assert_eq!(name_of_file("moods.yaml").as_deref(), Some("moods.yaml"));
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
