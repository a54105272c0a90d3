// Downloading a model into IndexedDB in the browser, with the app's own download code, from a
// server this test starts on 127.0.0.1 (another origin, as the CDN is) holding the tiny model
// of tests/fixtures/tiny-sd in the manifest layout — and breaking it on purpose: a connection
// dropped mid-file, corrupted bytes, a missing file, a CORS refusal, a page reload mid-download
// and a storage quota too small.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { launch, openPage, ARTIFACTS, APP_URL, setField, generateImages, confirmAddedModels } from './harness.mjs';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'tiny-sd');
const MANIFEST = readFileSync(path.join(ROOT, '..', 'tiny-sd.toml'), 'utf8');
const FILES = [...MANIFEST.matchAll(/path = "([^"]+)"\ncomponent = "[^"]+"\nsize = (\d+)\nsha256 = "([0-9a-f]+)"/g)]
  .map((m) => ({ path: m[1], size: Number(m[2]), sha256: m[3] }));
const TOTAL = FILES.reduce((n, f) => n + f.size, 0);
const UNET = 'unet/diffusion_pytorch_model.safetensors';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const servers = [];

/// The fake CDN. `state` steers the faults; `state.log` records every request.
function startServer() {
  const state = { log: [], cors: true, delayMs: 0, corrupt: null, dropOnce: null };
  const server = http.createServer(async (req, res) => {
    const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname).replace(/^\/+/, '');
    const cors = state.cors
      ? { 'Access-Control-Allow-Origin': '*', 'Access-Control-Expose-Headers': 'Content-Range, Content-Length',
          'Access-Control-Allow-Headers': 'Range' }
      : {};
    if (req.method === 'OPTIONS') { res.writeHead(204, cors); res.end(); return; }
    const range = /bytes=(\d+)-(\d+)/.exec(req.headers.range || '');
    const start = range ? Number(range[1]) : 0;
    state.log.push({ path: rel, start });
    if (state.delayMs) await sleep(state.delayMs);
    const file = path.join(ROOT, rel);
    if (!rel || rel.includes('..') || !existsSync(file)) { res.writeHead(404, cors); res.end(); return; }
    let data = readFileSync(file);
    if (state.corrupt === rel) { data = Buffer.from(data); data[data.length >> 1] ^= 0x55; }
    const end = range ? Math.min(Number(range[2]), data.length - 1) : data.length - 1;
    const body = data.subarray(start, end + 1);
    const headers = { ...cors, 'Content-Type': 'application/octet-stream', 'Content-Length': body.length };
    if (range) headers['Content-Range'] = `bytes ${start}-${end}/${data.length}`;
    res.writeHead(range ? 206 : 200, headers);
    if (state.dropOnce === rel) {
      state.dropOnce = null;
      res.write(body.subarray(0, body.length >> 1));
      await sleep(50);
      res.socket.destroy();
      return;
    }
    res.end(body);
  });
  servers.push(server);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    resolve({ state, server, base: `http://127.0.0.1:${server.address().port}` });
  }));
}

let browser;
before(async () => { browser = await launch(); });
after(async () => {
  await browser?.close();
  // A failed test must not leave a server keeping node alive.
  for (const server of servers) { server.closeAllConnections?.(); server.close(); }
});

const CHUNK = 128 * 1024;
const query = (base, chunk = CHUNK) =>
  `dev/?check=weights&manifest=/fixtures/tiny-sd.toml&base=${encodeURIComponent(base)}&chunk=${chunk}`;

async function finished(page, timeout = 180_000) {
  await page.waitForFunction(() => ['done', 'error'].includes(window.__darkroomWeights?.state), null, { timeout });
  return page.evaluate(() => window.__darkroomWeights);
}

function assertAllIdentical(result) {
  assert.equal(result.files.length, FILES.length);
  for (const f of result.files) {
    const want = FILES.find((x) => x.path === f.path);
    assert.ok(f.complete, `${f.path} is not complete`);
    assert.equal(f.sha256, want.sha256, `${f.path}: stored bytes differ from the file`);
  }
}

/// How often each (path, offset) was requested.
function repeats(log) {
  const seen = new Map();
  for (const { path: p, start } of log) seen.set(`${p}@${start}`, (seen.get(`${p}@${start}`) ?? 0) + 1);
  return [...seen.entries()].filter(([, n]) => n > 1);
}

test('a dropped connection resumes from the last stored chunk, bytes identical', async () => {
  const { state, server, base } = await startServer();
  state.dropOnce = UNET;
  const { context, page } = await openPage(browser, { bypassCSP: true, query: query(base) });
  const result = await finished(page);
  assert.equal(result.state, 'done', result.error);
  assertAllIdentical(result);
  assert.equal(result.done, TOTAL);
  // Only the cut chunk was asked for twice.
  assert.deepEqual(repeats(state.log), [[`${UNET}@0`, 2]]);
  await page.screenshot({ path: path.join(ARTIFACTS, 'weights-download.png'), fullPage: true });

  // A second visit finds the model complete and downloads nothing.
  const before = state.log.length;
  await page.reload();
  const again = await finished(page);
  assert.equal(again.state, 'done');
  assert.equal(state.log.length, before, 'nothing is downloaded twice');
  await context.close();
  server.close();
});

test('corrupted bytes fail the sha256 check and nothing corrupt is kept as complete', async () => {
  const { state, server, base } = await startServer();
  state.corrupt = UNET;
  const { context, page } = await openPage(browser, { bypassCSP: true, query: query(base) });
  const result = await finished(page);
  assert.equal(result.state, 'error');
  assert.match(result.error, /corrupt/);
  assert.match(result.error, /fetch it again/);
  const unet = result.files.find((f) => f.path === UNET);
  assert.equal(unet.complete, false);
  assert.equal(unet.chunks, 0, 'the bad download is discarded');
  assert.ok(result.files.every((f) => !f.complete || f.sha256 === FILES.find((x) => x.path === f.path).sha256));
  // The server heals: a reload completes the download.
  state.corrupt = null;
  await page.reload();
  const healed = await finished(page);
  assert.equal(healed.state, 'done', healed.error);
  assertAllIdentical(healed);
  await context.close();
  server.close();
});

test('a missing file and a CORS refusal are clear errors', async () => {
  const { state, server, base } = await startServer();
  const missing = await openPage(browser, { bypassCSP: true, query: query(`${base}/no-such-model`) });
  const result = await finished(missing.page);
  assert.equal(result.state, 'error');
  assert.match(result.error, /404/);
  assert.match(result.error, /no file at that address/);
  await missing.context.close();

  state.cors = false;
  const refused = await openPage(browser, { bypassCSP: true, query: query(base) });
  const blocked = await finished(refused.page);
  assert.equal(blocked.state, 'error');
  assert.match(blocked.error, /cross-origin/);
  await refused.page.screenshot({ path: path.join(ARTIFACTS, 'weights-cors-error.png'), fullPage: true });
  await refused.context.close();
  server.close();
});

test('a page reload mid-download resumes instead of restarting', async () => {
  const { state, server, base } = await startServer();
  state.delayMs = 60;
  const { context, page } = await openPage(browser, { bypassCSP: true, query: query(base) });
  await page.waitForFunction(() => (window.__darkroomWeights?.done ?? 0) > 3_000_000, null, { timeout: 120_000 });
  const beforeReload = state.log.length;
  await page.reload();
  state.delayMs = 0;
  const result = await finished(page);
  assert.equal(result.state, 'done', result.error);
  assertAllIdentical(result);
  const chunks = FILES.reduce((n, f) => n + Math.max(1, Math.ceil(f.size / CHUNK)), 0);
  // At most the chunk in flight at the reload is asked for again.
  assert.ok(repeats(state.log).length <= 1, JSON.stringify(repeats(state.log)));
  assert.ok(state.log.length <= chunks + 1, `${state.log.length} requests for ${chunks} chunks`);
  assert.ok(beforeReload > 10 && beforeReload < chunks, `reloaded after ${beforeReload} of ${chunks} chunks`);
  await context.close();
  server.close();
});

test('a storage quota too small is a clear error, not a half-written model marked complete', async () => {
  const { server, base } = await startServer();
  // The check page downloads from a second origin, which the app's CSP forbids.
  const context = await browser.newContext({ bypassCSP: true });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: new URL(APP_URL).origin, quotaSize: 1_000_000 });
  // One 4 MiB chunk is a single write larger than the whole quota.
  await page.goto(APP_URL + query(base, 4 << 20));
  const result = await finished(page);
  assert.equal(result.state, 'error', JSON.stringify(result).slice(0, 300));
  assert.match(result.error, /storage/i);
  const unet = result.files?.find((f) => f.path === UNET);
  assert.ok(!unet || !unet.complete, 'the UNet cannot be complete in 1 MB');
  await page.screenshot({ path: path.join(ARTIFACTS, 'weights-quota-error.png'), fullPage: true });
  await context.close();
  server.close();
});

/// diffusers' image for a case of tests/fixtures/pipeline (float [B, H, W, 3] in 0..1).
function referenceImage(name) {
  const bytes = readFileSync(path.join(ROOT, '..', 'pipeline', 'reference.safetensors'));
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  const [start, end] = header[`${name}/image`].data_offsets;
  const data = bytes.subarray(8 + n + start, 8 + n + end);
  return new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
}

test('a downloaded model generates from IndexedDB the image diffusers makes', async () => {
  const { server, base } = await startServer();
  const generate = '&load=f32&prompt=' + encodeURIComponent('a photograph of an astronaut riding a horse') +
    '&seed=1&steps=4&sampler=euler&cfg=7.5&width=64&height=48';
  const { context, page, problems } = await openPage(browser, { bypassCSP: true, query: query(base) + generate });
  const result = await finished(page, 300_000);
  assert.equal(result.state, 'done', result.error);
  const { width, height, rgba, png } = result.image;
  assert.deepEqual([width, height], [64, 48]);
  const want = referenceImage('euler_cfg');
  let worst = 0;
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(rgba[i * 4 + c] - want[i * 3 + c] * 255));
  }
  assert.ok(worst <= 2, `worst pixel differs from diffusers by ${worst}/255`);
  const text = Buffer.from(Object.values(png)).toString('latin1');
  assert.ok(text.includes('parameters\0a photograph of an astronaut riding a horse\nSteps: 4, Sampler: Euler, CFG scale: 7.5, Seed: 1, Size: 64x48'),
    'the PNG carries A1111 parameters');
  await page.waitForSelector('img.result');
  await page.screenshot({ path: path.join(ARTIFACTS, 'weights-generated.png'), fullPage: true });
  assert.deepEqual(problems, []);
  await context.close();
  server.close();
});

test('quantized weights are cached in IndexedDB and reused on the next visit', async () => {
  const { server, base } = await startServer();
  const { context, page } = await openPage(browser, { bypassCSP: true, query: query(base) + '&load=q8' });
  const first = await finished(page);
  assert.equal(first.state, 'done', first.error);
  assert.ok(first.load.cacheWrites > 10, `first visit quantizes and stores: ${JSON.stringify(first.load)}`);
  assert.equal(first.load.cacheHits, 0);
  await page.reload();
  const second = await finished(page);
  assert.equal(second.state, 'done', second.error);
  assert.equal(second.load.cacheWrites, 0, 'nothing is quantized again');
  assert.equal(second.load.cacheHits, first.load.cacheWrites);
  await context.close();
  server.close();
});

/// The keys of the app's weight store (`store`: "files" or "blobs") that start with `prefix`.
async function storedKeys(page, store, prefix) {
  return page.evaluate(([store, prefix]) => new Promise((resolve, reject) => {
    const open = indexedDB.open('darkroom-weights');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const request = db.transaction(store).objectStore(store).getAllKeys();
      request.onsuccess = () => { db.close(); resolve(request.result.filter((k) => String(k).startsWith(prefix))); };
      request.onerror = () => reject(request.error);
    };
  }), [store, prefix]);
}

const usage = (page) => page.evaluate(async () => (await navigator.storage.estimate()).usage);

/// The tiny model under another id, its weights quantized to q8 when loaded.
function q8Manifest(id) {
  const text = MANIFEST.replace(/^id = "tiny-sd"$/m, `id = "${id}"`).replace(/^name = .*$/m, `name = "Tiny SD q8 (${id})"`)
    .replace('[quantization]\nlinear = "none"\nconv = "none"', '[quantization]\nlinear = "q8"\nconv = "q8"');
  assert.ok(text.includes('linear = "q8"'), 'the fixture manifest changed shape');
  return text;
}

/// The fake CDN under the app's own origin (`<app>/cdn/…`), answered by the test inside the
/// browser: the app's worker may fetch only from its origin and the hosts its policy names, as
/// in production. `state` as startServer's (a log, a delay, extra files).
async function routeCdn(context) {
  const state = { log: [], delayMs: 0, extra: {} };
  await context.route((url) => url.href.startsWith(`${APP_URL}cdn/`), async (route) => {
    const request = route.request();
    const rel = decodeURIComponent(new URL(request.url()).pathname).replace(/^.*?\/cdn\//, '');
    const range = /bytes=(\d+)-(\d+)/.exec((await request.allHeaders()).range || '');
    const start = range ? Number(range[1]) : 0;
    state.log.push({ path: rel, start });
    if (state.delayMs) await sleep(state.delayMs);
    if (rel in state.extra) {
      await route.fulfill({ status: 200, contentType: 'text/plain', body: state.extra[rel] });
      return;
    }
    const file = path.join(ROOT, rel);
    if (!rel || rel.includes('..') || !existsSync(file)) { await route.fulfill({ status: 404, body: '' }); return; }
    const data = readFileSync(file);
    const end = range ? Math.min(Number(range[2]), data.length - 1) : data.length - 1;
    const headers = { 'Content-Type': 'application/octet-stream' };
    if (range) headers['Content-Range'] = `bytes ${start}-${end}/${data.length}`;
    try {
      await route.fulfill({ status: range ? 206 : 200, headers, body: data.subarray(start, end + 1) });
    } catch {
      // The page or its worker went away meanwhile.
    }
  });
  return state;
}

const cdnQuery = (name) =>
  `?manifest=${encodeURIComponent(`${APP_URL}cdn/${name}`)}&base=${encodeURIComponent(`${APP_URL}cdn/`)}`;

test('deleting a model drops what was quantized from it: no blob is left behind', async () => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const state = await routeCdn(context);
  state.extra['tiny-sd-q8.toml'] = q8Manifest('tiny-sd-q8');
  const page = await context.newPage();
  const query = cdnQuery('tiny-sd-q8.toml');
  await page.goto(APP_URL + query);
  await confirmAddedModels(page, query);
  const empty = await usage(page);
  await page.click('#tab-models');
  await page.click('[data-model="tiny-sd-q8"] button.download');
  await page.click('[data-model="tiny-sd-q8"] .license button.primary');
  await page.waitForSelector('[data-model="tiny-sd-q8"][data-state="complete"]', { timeout: 120_000 });
  await page.click('[data-model="tiny-sd-q8"] button.use');
  await setField(page, '#steps', 2);
  await generateImages(page, 1);
  const quantized = await storedKeys(page, 'blobs', 'quantized/');
  assert.ok(quantized.length > 10, `loading quantized and cached layers: ${quantized.length}`);
  const full = await usage(page);

  await page.click('#tab-models');
  await page.click('[data-model="tiny-sd-q8"] button.delete');
  await page.waitForSelector('[data-model="tiny-sd-q8"] button.download', { timeout: 60_000 });
  assert.deepEqual(await storedKeys(page, 'blobs', 'quantized/'), [], 'quantized layers outlived their model');
  assert.deepEqual(await storedKeys(page, 'files', 'tiny-sd-q8/'), []);
  const after = await usage(page);
  console.log(`storage estimate: ${empty} empty, ${full} with the model, ${after} after Delete`);
  assert.ok(after < full, `the storage estimate went from ${full} to ${after} bytes`);
  await context.close();
});

test('a model deleted in one tab while another downloads it: the download stops, nothing is left', async () => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const state = await routeCdn(context);
  state.extra['tiny-sd-two.toml'] = q8Manifest('tiny-sd-two');
  const query = cdnQuery('tiny-sd-two.toml');
  const page = await context.newPage();
  await page.goto(APP_URL + query);
  await confirmAddedModels(page, query);
  state.delayMs = 700;
  await page.click('#tab-models');
  await page.click('[data-model="tiny-sd-two"] button.download');
  await page.click('[data-model="tiny-sd-two"] .license button.primary');
  await page.waitForSelector('[data-model="tiny-sd-two"] button.pause', { timeout: 60_000 });
  while (state.log.filter((r) => !r.path.endsWith('.toml')).length < 3) await sleep(100);

  // A second tab of the same browser sees the partial download and deletes it.
  const second = await context.newPage();
  state.delayMs = 0;
  await second.goto(APP_URL + query);
  state.delayMs = 700;
  await second.click('#tab-models');
  await second.click('[data-model="tiny-sd-two"] button.delete', { timeout: 60_000 });
  await second.waitForSelector('[data-model="tiny-sd-two"] button.download:has-text("Download")', { timeout: 60_000 });

  // The first tab's download was cancelled, not left writing into a deleted model, and the tab
  // shows the model as not downloaded (not as a partial download to resume).
  await page.waitForSelector('[data-model="tiny-sd-two"][data-state="absent"]', { timeout: 60_000 });
  const requests = state.log.length;
  await sleep(3 * state.delayMs);
  assert.equal(state.log.length, requests, 'the download went on after the deletion');
  assert.deepEqual(await storedKeys(page, 'files', 'tiny-sd-two/'), [], 'files outlived the deletion');
  await page.screenshot({ path: path.join(ARTIFACTS, 'delete-while-downloading.png'), fullPage: true });
  await context.close();
});
