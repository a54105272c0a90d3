// A long session in one page: generations alternating between two models (the tiny SD and the
// tiny SDXL) and two sizes, with what each could leak measured after a warm-up round and at the
// end — the worker's GPU buffer pool, its wasm memory and IndexedDB connections, the page's JS
// heap (after a forced garbage collection), its live blob URLs and IndexedDB connections. CI
// runs 12 generations; `cargo xtask soak` runs 200 (SOAK_RUNS) and prints the same table.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, openPage, setField, fixtureModel, downloadModel } from './harness.mjs';

const RUNS = Number(process.env.SOAK_RUNS || 12);
const MODELS = ['tiny-sd', 'tiny-sdxl'];
const SIZES = [[64, 64], [64, 48]];
const QUERY = `?${MODELS.map((m) => fixtureModel(m)).join('&')}`;

// Counts the page's live blob URLs and the IndexedDB connections it opened and did not close.
const COUNTERS = `
window.__soak = { blobs: new Set(), idbOpen: 0, idbClosed: 0 };
const create = URL.createObjectURL.bind(URL);
URL.createObjectURL = (o) => { const u = create(o); window.__soak.blobs.add(u); return u; };
const revoke = URL.revokeObjectURL.bind(URL);
URL.revokeObjectURL = (u) => { window.__soak.blobs.delete(u); revoke(u); };
const open = IDBFactory.prototype.open;
IDBFactory.prototype.open = function (...args) {
  const request = open.apply(this, args);
  request.addEventListener('success', () => { window.__soak.idbOpen += 1; });
  return request;
};
const close = IDBDatabase.prototype.close;
IDBDatabase.prototype.close = function () { window.__soak.idbClosed += 1; return close.call(this); };
`;

let browser;
let session;
before(async () => {
  browser = await launch();
  // The developer build: it answers `darkroomWorkerStats()`.
  session = await openPage(browser, { query: `dev/${QUERY}`, initScript: COUNTERS });
});
after(async () => { await browser?.close(); });

async function measure(page, cdp) {
  await cdp.send('HeapProfiler.collectGarbage');
  const heap = await cdp.send('Runtime.getHeapUsage');
  const page_ = await page.evaluate(() => ({ blobs: window.__soak.blobs.size, idb: window.__soak.idbOpen - window.__soak.idbClosed }));
  const worker = await page.evaluate(() => window.darkroomWorkerStats());
  return {
    'page JS heap (bytes)': heap.usedSize,
    'page blob URLs': page_.blobs,
    'page IndexedDB connections': page_.idb,
    'worker pool (bytes)': worker.pool_allocated_bytes,
    'worker pool buffers created': worker.pool_buffers_created,
    'worker wasm memory (bytes)': worker.wasm_memory_bytes,
    'worker IndexedDB connections': worker.idb_connections,
  };
}

async function generate(page, i) {
  const model = MODELS[i % MODELS.length];
  const [width, height] = SIZES[Math.floor(i / MODELS.length) % SIZES.length];
  await page.selectOption('#model', model);
  await setField(page, '#steps', 2);
  await setField(page, '#width', width);
  await setField(page, '#height', height);
  await page.fill('#prompt', `soak run ${i}`);
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction((n) => {
    const images = document.querySelectorAll('#results figure img');
    return images.length === 1 && !document.querySelector('#run') && images[0].alt.split('\n')[0] === `soak run ${n}`;
  }, i, { timeout: 240_000 }).catch(async (e) => {
    const error = await page.$eval('#generate-error', (el) => el.textContent).catch(() => null);
    throw new Error(`run ${i}: ${error ?? e.message}`);
  });
}

test(`${RUNS} generations alternating models and sizes leak nothing`, async () => {
  const { page, context, problems } = session;
  const cdp = await context.newCDPSession(page);
  for (const model of MODELS) await downloadModel(page, model);
  await page.click('#tab-generate');
  const warm = MODELS.length * SIZES.length;
  assert.ok(RUNS >= 2 * warm, `at least two rounds of ${warm}`);
  let first;
  const started = Date.now();
  for (let i = 0; i < RUNS; i++) {
    await generate(page, i);
    if (i + 1 === warm) first = await measure(page, cdp);
    if (process.env.SOAK_RUNS && (i + 1) % 20 === 0) {
      console.log(`${i + 1} of ${RUNS} generations, ${((Date.now() - started) / 1000).toFixed(0)} s`);
    }
  }
  const last = await measure(page, cdp);
  const rows = Object.keys(first).map((k) => `| ${k} | ${first[k]} | ${last[k]} | ${last[k] - first[k]} |`);
  console.log([`| after ${warm} / ${RUNS} generations | after warm-up | at the end | growth |`, '|---|---|---|---|', ...rows].join('\n'));

  assert.ok(last['page blob URLs'] <= first['page blob URLs'], 'blob URLs pile up');
  assert.ok(last['page IndexedDB connections'] <= first['page IndexedDB connections'], 'the page leaves IndexedDB connections open');
  assert.equal(last['worker IndexedDB connections'], 0, 'the worker leaves IndexedDB connections open');
  assert.ok(last['worker pool (bytes)'] <= first['worker pool (bytes)'], 'the pool grew');
  // wasm memory never shrinks; it may grow a little while allocations settle, not per run.
  assert.ok(last['worker wasm memory (bytes)'] - first['worker wasm memory (bytes)'] <= 16 << 20, 'the worker\'s wasm memory grew');
  const perRun = (last['page JS heap (bytes)'] - first['page JS heap (bytes)']) / (RUNS - warm);
  assert.ok(perRun < 20_000, `the page's JS heap grew ${perRun.toFixed(0)} bytes per generation`);
  assert.deepEqual(problems, []);
});
