//! Which URLs the download layer may request, and Hugging Face's `resolve/<revision>` layout.

/// `scheme://host[:port]` of an absolute http(s) URL, lower-cased; `None` for anything else.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// Whether the download layer may request `url`: the page's own origin, Hugging Face over
/// https (`huggingface.co`, its subdomains and `*.hf.co`, where its files are served from), or
/// one of `extra` (a mirror's origin the user confirmed). Everything else is refused before any
/// request is made: what a user does in Darkroom never reaches another host, whatever a
/// manifest says.
pub fn weight_url_allowed(url: &str, page_origin: &str, extra: &[String]) -> bool {
    let Some(origin) = origin_of(url) else { return false };
    if origin == page_origin.to_ascii_lowercase()
        || extra.iter().any(|e| origin_of(e).as_deref() == Some(&origin))
    {
        return true;
    }
    let Some(host) = origin.strip_prefix("https://") else { return false };
    host == "huggingface.co" || host.ends_with(".huggingface.co") || host.ends_with(".hf.co")
}

/// `url` with the revision after `/resolve/` replaced by `commit` (Hugging Face's layout);
/// unchanged where the URL has no such segment.
pub fn pinned_url(url: &str, commit: &str) -> String {
    let Some(at) = url.find("/resolve/") else { return url.to_string() };
    let rest = &url[at + "/resolve/".len()..];
    match rest.find('/') {
        Some(end) => format!("{}/resolve/{commit}{}", &url[..at], &rest[end..]),
        None => url.to_string(),
    }
}
