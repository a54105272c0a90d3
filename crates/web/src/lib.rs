//! Darkroom in the browser. Trunk builds this crate's binary (see Trunk.toml and www/index.html),
//! a thin `main` over [`start`]; the logic is this library, so its pure parts have native unit
//! tests. The same wasm runs twice: in the page (the Leptos app) and in a dedicated worker
//! (www/worker.js), which owns the GPU and does the downloads and the generation.

mod app;
// Developer pages (`?check=…`, the benchmark page): only in the build the tests use, with the
// `dev-pages` feature (www/dev/index.html), never in the product.
#[cfg(feature = "dev-pages")]
mod bench_check;
mod briefs;
mod broadcast;
#[cfg(feature = "dev-pages")]
mod checks_app;
mod client;
mod components;
mod embed;
mod embed_request;
mod embeddings;
mod gallery;
mod generation;
mod idb_model;
mod import;
mod loras;
#[cfg(feature = "dev-pages")]
mod model_check;
mod net;
mod plot;
mod probe;
mod prompt_library;
mod protocol;
mod queue;
mod report;
mod state;
mod storage_access;
mod upscaling;
mod visibility;
#[cfg(feature = "dev-pages")]
mod weights_check;
mod worker;

/// Starts the page's app, or the worker's request loop when there is no window.
pub fn start() {
    console_error_panic_hook::set_once();
    let Some(window) = web_sys::window() else {
        // Inside the worker: no document, no UI.
        worker::start();
        return;
    };
    let search = window.location().search().unwrap_or_default();
    #[cfg(feature = "dev-pages")]
    {
        if let Some((base, runs)) = bench_check::requested() {
            // The onnxruntime-web comparison's page: no UI, results on `window`.
            wasm_bindgen_futures::spawn_local(bench_check::run(base, runs));
            return;
        }
        if search.contains("check=") {
            leptos::mount::mount_to_body(checks_app::ChecksApp);
            return;
        }
    }
    if search.contains("embed=") {
        leptos::mount::mount_to_body(embed::EmbedApp);
    } else {
        app::register_service_worker();
        leptos::mount::mount_to_body(app::App);
    }
}
