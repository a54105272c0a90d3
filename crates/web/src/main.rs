//! Darkroom in the browser. Trunk builds this crate (see Trunk.toml and www/index.html).

mod app;
mod components;
mod idb_model;
mod model_check;
mod probe;
mod report;
mod weights_check;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
