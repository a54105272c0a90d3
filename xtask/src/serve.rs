//! A small static file server for dist/ (and, for tests, any folder laid out like the weights
//! CDN): GET and HEAD, single byte ranges, the MIME types WebAssembly streaming needs, and no
//! path escapes from the served folder. Bound to 127.0.0.1 only.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

use crate::Result;

pub struct Server {
    listener: TcpListener,
    folder: PathBuf,
    /// (URL prefix, folder) pairs served beside the main folder: the browser tests mount
    /// tests/fixtures at /fixtures/, the way a CDN would serve weights.
    mounts: Vec<(String, PathBuf)>,
    /// index.html's Content-Security-Policy, sent as a header too: a `<meta>` policy covers the
    /// page only, the header also the worker and the service worker scripts. Used where the
    /// folder has no `_headers` file (the developer pages).
    csp: Option<String>,
    /// The folder's `_headers` rules (what static hosts read), applied as they would.
    headers: Vec<HeaderRule>,
}

/// One `_headers` rule: a path (exact, or a prefix ending in `*`) and the headers it adds.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderRule {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// Parses a `_headers` file (Netlify's and Cloudflare Pages' format): a path at the start of a
/// line, then its headers indented as `Name: value`; `#` starts a comment.
pub fn parse_headers(text: &str) -> Vec<HeaderRule> {
    let mut rules: Vec<HeaderRule> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            rules.push(HeaderRule { path: line.trim().to_string(), headers: Vec::new() });
        } else if let (Some(rule), Some((name, value))) = (rules.last_mut(), line.trim().split_once(':')) {
            rule.headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    rules
}

/// The headers the rules give a request path (its query left out), in file order.
pub fn headers_for(rules: &[HeaderRule], request_path: &str) -> Vec<(String, String)> {
    let path = request_path.split(['?', '#']).next().unwrap_or("/");
    rules
        .iter()
        .filter(|r| match r.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => r.path == path,
        })
        .flat_map(|r| r.headers.iter().cloned())
        .collect()
}

/// The policy of an `<meta http-equiv="Content-Security-Policy" content="…">` tag.
fn meta_csp(html: &str) -> Option<String> {
    let at = html.find("http-equiv=\"Content-Security-Policy\"")?;
    let rest = &html[at..];
    let start = rest.find("content=\"")? + "content=\"".len();
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].to_string())
}

impl Server {
    /// Port 0 picks a free port.
    pub fn bind(folder: &Path, port: u16) -> Result<Server> {
        if !folder.join("index.html").is_file() {
            return Err(format!("{} has no index.html: build the app first", folder.display()));
        }
        let listener = TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e} (pick another with --port N)"))?;
        let csp = std::fs::read_to_string(folder.join("index.html")).ok().and_then(|h| meta_csp(&h));
        let headers =
            std::fs::read_to_string(folder.join("_headers")).map(|t| parse_headers(&t)).unwrap_or_default();
        Ok(Server { listener, folder: folder.to_path_buf(), mounts: Vec::new(), csp, headers })
    }

    pub fn mount(mut self, prefix: &str, folder: &Path) -> Server {
        self.mounts.push((prefix.to_string(), folder.to_path_buf()));
        self
    }

    pub fn url(&self) -> String {
        let port = self.listener.local_addr().map(|a| a.port()).unwrap_or(0);
        format!("http://127.0.0.1:{port}/")
    }

    pub fn run_forever(self) {
        let roots = std::sync::Arc::new(Roots {
            folder: self.folder,
            mounts: self.mounts,
            csp: self.csp,
            headers: self.headers,
        });
        for stream in self.listener.incoming().flatten() {
            let roots = roots.clone();
            std::thread::spawn(move || {
                let _ = handle(stream, &roots);
            });
        }
    }
}

struct Roots {
    folder: PathBuf,
    mounts: Vec<(String, PathBuf)>,
    csp: Option<String>,
    headers: Vec<HeaderRule>,
}

impl Roots {
    fn resolve(&self, target: &str) -> Option<PathBuf> {
        for (prefix, folder) in &self.mounts {
            if let Some(rest) = target.strip_prefix(prefix.as_str()) {
                return resolve(folder, rest);
            }
        }
        resolve(&self.folder, target)
    }
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" | "webmanifest" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "toml" | "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The file a request path names inside `folder`, refusing `..` and absolute components.
fn resolve(folder: &Path, request_path: &str) -> Option<PathBuf> {
    let path = request_path.split(['?', '#']).next().unwrap_or("/");
    let mut out = folder.to_path_buf();
    for component in Path::new(path.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.is_dir() {
        out.push("index.html");
    }
    out.is_file().then_some(out)
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against a file of `len` bytes → inclusive (start, end).
fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.saturating_sub(n), len - 1)
        }
        (a, "") => (a.parse().ok()?, len - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

fn handle(stream: TcpStream, roots: &Roots) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut range = None;
        let mut keep_alive = true;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "range" => range = Some(value.trim().to_string()),
                    "connection" => keep_alive = !value.trim().eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        respond(&mut writer, roots, method, target, range.as_deref())?;
        if !keep_alive {
            return Ok(());
        }
    }
}

fn respond(
    out: &mut TcpStream,
    roots: &Roots,
    method: &str,
    target: &str,
    range: Option<&str>,
) -> std::io::Result<()> {
    let simple = |out: &mut TcpStream, status: &str| {
        write!(out, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nCache-Control: no-store\r\n\r\n")
    };
    if method != "GET" && method != "HEAD" {
        return simple(out, "405 Method Not Allowed");
    }
    let Some(path) = roots.resolve(target) else {
        return simple(out, "404 Not Found");
    };
    let mut file = File::open(&path)?;
    let len = file.metadata()?.len();
    let (status, start, end) = match range {
        Some(r) => match parse_range(r, len) {
            Some((s, e)) => ("206 Partial Content", s, e),
            None => {
                return write!(
                    out,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"
                )
            }
        },
        None => ("200 OK", 0, len.saturating_sub(1)),
    };
    let body_len = if len == 0 { 0 } else { end - start + 1 };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {body_len}\r\nAccept-Ranges: bytes\r\nCache-Control: no-cache\r\n",
        mime(&path)
    );
    if status.starts_with("206") {
        head.push_str(&format!("Content-Range: bytes {start}-{end}/{len}\r\n"));
    }
    if roots.headers.is_empty() {
        if let Some(csp) = &roots.csp {
            head.push_str(&format!("Content-Security-Policy: {csp}\r\n"));
        }
    } else if !roots.mounts.iter().any(|(prefix, _)| target.starts_with(prefix.as_str())) {
        for (name, value) in headers_for(&roots.headers, target) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if method == "HEAD" || body_len == 0 {
        return Ok(());
    }
    file.seek(SeekFrom::Start(start))?;
    std::io::copy(&mut file.take(body_len), out)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-2", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
    }

    #[test]
    fn the_header_policy_is_the_pages_meta_policy() {
        let html = r#"<meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="default-src 'self'; connect-src 'self' https://a.example">"#;
        assert_eq!(
            meta_csp(html).as_deref(),
            Some("default-src 'self'; connect-src 'self' https://a.example")
        );
        assert_eq!(meta_csp("<meta charset=utf-8>"), None);
        let shipped = std::fs::read_to_string(crate::root().join("www/index.html")).unwrap();
        assert!(meta_csp(&shipped).unwrap().contains("connect-src 'self'"), "www/index.html has a policy");
    }

    #[test]
    fn the_shipped_headers_carry_the_pages_policy_and_frame_only_the_widget() {
        let html = std::fs::read_to_string(crate::root().join("www/index.html")).unwrap();
        let page = meta_csp(&html).unwrap();
        let rules = parse_headers(&std::fs::read_to_string(crate::root().join("www/_headers")).unwrap());
        let csp = |path: &str| {
            let all = headers_for(&rules, path);
            let found: Vec<String> =
                all.into_iter().filter(|(n, _)| n == "Content-Security-Policy").map(|(_, v)| v).collect();
            assert_eq!(found.len(), 1, "{path}: one policy, got {found:?}");
            found[0].clone()
        };
        for path in ["/", "/index.html", "/?manifest=x"] {
            assert_eq!(csp(path), format!("{page}; frame-ancestors 'none'"), "{path}");
        }
        assert_eq!(csp("/embed.html?embed=1"), format!("{page}; frame-ancestors *"));
        for path in ["/worker.js", "/sw.js"] {
            assert_eq!(csp(path), page, "{path}: the workers are governed by the page's policy");
        }
        assert!(
            headers_for(&rules, "/style.css").contains(&("X-Content-Type-Options".into(), "nosniff".into()))
        );
    }

    #[test]
    fn paths_cannot_leave_the_folder() {
        let dir = std::env::temp_dir().join(format!("darkroom-serve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("index.html"), "x").unwrap();
        std::fs::write(dir.join("sub/a.wasm"), "x").unwrap();
        assert_eq!(resolve(&dir, "/"), Some(dir.join("index.html")));
        assert_eq!(resolve(&dir, "/sub/a.wasm?v=1"), Some(dir.join("sub/a.wasm")));
        assert_eq!(resolve(&dir, "/../etc/passwd"), None);
        assert_eq!(resolve(&dir, "/missing"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
