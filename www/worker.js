// The generation worker: the app's own wasm, started without a document. Its `main` sees no
// window, installs the message handler and posts "Ready"; the page holds requests until then.
import init from './darkroom-web.js';

await init({ module_or_path: new URL('./darkroom-web_bg.wasm', import.meta.url) });
