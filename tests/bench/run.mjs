// The onnxruntime-web comparison, driven by `cargo xtask bench`: serves the built app, the
// exported models (tests/bench/export.py) and onnxruntime-web from 127.0.0.1, opens the app's
// bench page in headless Chromium (WebGPU), lets our engine run every model and component, then
// runs onnxruntime-web (WebGPU, and its single-threaded wasm CPU backend for scale) in the same
// page on the same inputs, and prints the times, the ratio ours/theirs and how far each output
// is from the others and from PyTorch's.
//
// Environment: BENCH_DIR (export.py's folder), DIST (the Trunk build), ORT_DIR (onnxruntime-web's
// dist/), RUNS (timed runs per stage, after one warm-up), OUT (a Markdown copy of the table).

import http from 'node:http';
import { readFileSync, existsSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const BENCH_DIR = process.env.BENCH_DIR;
const DIST = process.env.DIST;
const ORT_DIR = process.env.ORT_DIR;
const RUNS = Number(process.env.RUNS || 3);
const OUT = process.env.OUT;

const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm',
  '.json': 'application/json', '.css': 'text/css', '.webmanifest': 'application/manifest+json',
};

function serve() {
  const roots = [['/ort/', ORT_DIR], ['/bench/', BENCH_DIR], ['/', DIST]];
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const [prefix, dir] = roots.find(([p]) => url.startsWith(p));
    let file = path.resolve(dir, url.slice(prefix.length));
    if (!file.startsWith(path.resolve(dir))) return res.writeHead(403).end();
    if (existsSync(file) && statSync(file).isDirectory()) file = path.join(file, 'index.html');
    if (!existsSync(file)) return res.writeHead(404).end();
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream' });
    res.end(readFileSync(file));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
function maxDiff(a, b) {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
function floats(file) {
  const buf = readFileSync(file);
  return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
}

// Runs in the page: one onnxruntime-web session per component and backend.
async function ortRun({ models, runs, provider }) {
  const ort = await import('/ort/ort.all.min.mjs');
  ort.env.wasm.wasmPaths = '/ort/';
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = 'error';
  const rows = [];
  for (const model of models) {
    for (const c of model.components) {
      const base = `/bench/${model.name}/`;
      const session = await ort.InferenceSession.create(base + c.onnx, { executionProviders: [provider], logSeverityLevel: 3 });
      const feeds = {};
      for (const [name, spec] of Object.entries(c.inputs)) {
        const bytes = await (await fetch(base + spec.file)).arrayBuffer();
        const data = spec.type === 'int32' ? new Int32Array(bytes) : new Float32Array(bytes);
        feeds[name] = new ort.Tensor(spec.type, data, spec.shape);
      }
      let out = await session.run(feeds);
      const ms = [];
      for (let i = 0; i < runs; i++) {
        const t = performance.now();
        out = await session.run(feeds);
        ms.push(performance.now() - t);
      }
      rows.push({ model: model.name, component: c.component, ms, output: Array.from(out.output.data) });
      await session.release();
    }
  }
  return rows;
}

async function main() {
  const manifest = JSON.parse(readFileSync(path.join(BENCH_DIR, 'bench.json'), 'utf8'));
  const server = await serve();
  process.env.DARKROOM_URL = `http://127.0.0.1:${server.address().port}/`;
  const { launch, openPage } = await import('../e2e/harness.mjs');
  const browser = await launch();
  const { page, problems } = await openPage(browser, { query: `?check=bench&bench=/bench/&runs=${RUNS}`, bypassCSP: true });
  page.setDefaultTimeout(0);

  console.log(`Chromium ${browser.version()}, onnxruntime-web ${JSON.parse(readFileSync(path.join(ORT_DIR, '..', 'package.json'))).version}, ` +
    `PyTorch ${manifest.torch} reference; median of ${RUNS} runs after a warm-up\n`);
  process.stdout.write('ours (Darkroom, WebGPU) …');
  await page.waitForFunction(() => window.__darkroomBench?.done || window.__darkroomBench?.error, null, { polling: 1000 });
  const ours = await page.evaluate(() => {
    const b = window.__darkroomBench;
    return { adapter: b.adapter, error: b.error, rows: b.results.map((r) => ({ ...r, output: Array.from(r.output) })) };
  });
  if (ours.error) throw new Error(`our bench page failed: ${ours.error}`);
  const adapter = await page.evaluate(async () => {
    const info = (await navigator.gpu.requestAdapter())?.info;
    return info ? [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') : 'no adapter';
  });
  process.stdout.write(' onnxruntime-web WebGPU …');
  const webgpu = await page.evaluate(ortRun, { models: manifest.models, runs: RUNS, provider: 'webgpu' });
  process.stdout.write(' onnxruntime-web wasm …');
  const wasm = await page.evaluate(ortRun, { models: manifest.models, runs: RUNS, provider: 'wasm' });
  console.log(' done\n');
  await browser.close();
  server.close();

  const lines = [
    `adapter: ${adapter} (WebGPU in Chromium ${browser.version()}), ${new Date().toISOString().slice(0, 10)}`,
    '',
    '| model | stage | ours ms | ORT WebGPU ms | ours / ORT WebGPU | ORT wasm ms (1 thread) | max abs diff ours vs ORT | ours vs PyTorch | ORT vs PyTorch |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  let agree = true;
  for (const model of manifest.models) {
    for (const c of model.components) {
      const find = (rows) => rows.find((r) => r.model === model.name && r.component === c.component);
      const [o, g, w] = [find(ours.rows), find(webgpu), find(wasm)];
      const torch = floats(path.join(BENCH_DIR, model.name, c.output.file));
      const [mo, mg, mw] = [median(o.ms), median(g.ms), median(w.ms)];
      const dOurs = maxDiff(o.output, torch);
      const dOrt = maxDiff(g.output, torch);
      const dBoth = maxDiff(o.output, g.output);
      // Both engines compute in f32: a large gap means one of them is broken, and its time means nothing.
      const scale = Math.max(...torch.map(Math.abs));
      if (!(dOurs <= 1e-2 * Math.max(1, scale) && dOrt <= 1e-2 * Math.max(1, scale))) agree = false;
      lines.push(`| ${model.name} | ${c.label} | ${mo.toFixed(1)} | ${mg.toFixed(1)} | ${(mo / mg).toFixed(2)} | ${mw.toFixed(1)} | ` +
        `${dBoth.toExponential(1)} | ${dOurs.toExponential(1)} | ${dOrt.toExponential(1)} |`);
    }
  }
  const text = lines.join('\n');
  console.log(text);
  if (OUT) writeFileSync(OUT, text + '\n');
  if (problems.length) console.log(`\npage problems: ${problems.join('; ')}`);
  if (!agree) {
    console.error('\nan output is far from PyTorch\'s: the times above are not comparable');
    process.exitCode = 1;
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
