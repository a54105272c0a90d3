// The generation worker: the app's own wasm, started without a document. Its `main` sees no
// window, installs the message handler and posts "Ready"; the page holds requests until then.
// As a shared worker (the embedded widget's, started through the Storage Access API so that it
// works on Darkroom's own storage) its page connects with a port, possibly before the wasm is
// ready: such ports wait in `darkroomPorts`, later ones go to `darkroomOnPort` (set by the wasm).
//
// An error nothing caught (a trap in the wasm, a failed promise) leaves the wasm's state
// broken: the page is told (`Crashed`, as the wasm's panic hook tells it of a panic) and starts
// a new worker.
import init from './darkroom-web.js';

const connected = [];

function crashed(what) {
  const message = String(what?.message ?? what ?? 'an unknown error');
  const json = JSON.stringify({ id: 0, body: { Crashed: { message } } });
  if (connected.length) for (const port of connected) port.postMessage({ json, bytes: [] });
  else if (typeof self.postMessage === 'function') self.postMessage({ json, bytes: [] });
}
self.addEventListener('error', (event) => crashed(event.error ?? event.message));
self.addEventListener('unhandledrejection', (event) => crashed(event.reason));

if (typeof SharedWorkerGlobalScope !== 'undefined' && self instanceof SharedWorkerGlobalScope) {
  self.darkroomPorts = [];
  self.onconnect = (event) => {
    connected.push(event.ports[0]);
    if (self.darkroomOnPort) self.darkroomOnPort(event.ports[0]);
    else self.darkroomPorts.push(event.ports[0]);
  };
}

await init({ module_or_path: new URL('./darkroom-web_bg.wasm', import.meta.url) });
