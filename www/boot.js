// Starts the app: the wasm-bindgen module Trunk built (file names fixed by Trunk.toml's
// `filehash = false`), loaded from this file so the Content-Security-Policy needs no inline
// script. The same module runs in the generation worker (worker.js).
import init from './darkroom-web.js';

await init({ module_or_path: new URL('./darkroom-web_bg.wasm', import.meta.url) });
