//! The web app's Content-Security-Policy (www/index.html) must let the browser reach every host
//! the shipped manifests download from, and nothing else besides the page's own origin.

use darkroom_weights::manifest::builtin;

fn connect_src() -> Vec<String> {
    let html = include_str!("../../../www/index.html");
    let policy = html.split("content=\"default-src").nth(1).expect("index.html has a CSP meta tag");
    let policy = policy.split('"').next().unwrap();
    let directive =
        policy.split(';').map(str::trim).find(|d| d.starts_with("connect-src")).expect("connect-src");
    directive.split_whitespace().skip(1).map(String::from).collect()
}

fn host(url: &str) -> String {
    url.split("://").nth(1).unwrap().split('/').next().unwrap().to_string()
}

fn allowed(sources: &[String], url: &str) -> bool {
    let h = host(url);
    sources.iter().any(|s| {
        let Some(pattern) = s.strip_prefix("https://") else { return false };
        url.starts_with("https://")
            && match pattern.strip_prefix("*.") {
                Some(suffix) => h.ends_with(&format!(".{suffix}")),
                None => h == pattern,
            }
    })
}

#[test]
fn every_weight_url_is_allowed_and_nothing_more() {
    let sources = connect_src();
    for manifest in builtin().unwrap() {
        for file in &manifest.files {
            let url = manifest.url(file, None);
            assert!(allowed(&sources, &url), "{url} is blocked by connect-src {sources:?}");
        }
    }
    // Only the page's origin and Hugging Face (the resolve URL and the CDN it redirects to).
    let expected = ["'self'", "https://huggingface.co", "https://*.huggingface.co", "https://*.hf.co"];
    assert_eq!(sources, expected);
    assert!(!allowed(&sources, "https://analytics.example.com/collect"));
    assert!(!allowed(&sources, "http://huggingface.co/x"), "plain http is not allowed");
}
