// The generation worker: the app's own wasm, started without a document. Its `main` sees no
// window, installs the message handler and posts "Ready"; the page holds requests until then.
// As a shared worker (the embedded widget's, started through the Storage Access API so that it
// works on Darkroom's own storage) its page connects with a port, possibly before the wasm is
// ready: such ports wait in `darkroomPorts`, later ones go to `darkroomOnPort` (set by the wasm).
import init from './darkroom-web.js';

if (typeof SharedWorkerGlobalScope !== 'undefined' && self instanceof SharedWorkerGlobalScope) {
  self.darkroomPorts = [];
  self.onconnect = (event) => {
    if (self.darkroomOnPort) self.darkroomOnPort(event.ports[0]);
    else self.darkroomPorts.push(event.ports[0]);
  };
}

await init({ module_or_path: new URL('./darkroom-web_bg.wasm', import.meta.url) });
