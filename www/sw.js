// Keeps the app shell on this device so Darkroom opens and generates with the network
// unplugged; the weights themselves live in IndexedDB. Same-origin GETs only: network first
// (an update is seen as soon as the network answers), the cached copy when it does not.
// Range requests (weight downloads) and other origins pass straight through, untouched.

const CACHE = 'darkroom-shell-v2';
const SHELL = ['./', './index.html', './embed.html', './boot.js', './worker.js', './darkroom-web.js', './darkroom-web_bg.wasm',
  './style.css', './favicon.svg', './manifest.webmanifest'];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin || request.headers.has('range')) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const response = await fetch(request);
      if (response.ok && response.status === 200) cache.put(request, response.clone());
      return response;
    } catch (offline) {
      const cached = await cache.match(request, { ignoreSearch: request.mode === 'navigate' });
      if (cached) return cached;
      throw offline;
    }
  })());
});
