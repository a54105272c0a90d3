// The first screen in a real browser: the capability panel reads the adapter WebGPU gives, and
// a real WGSL kernel runs on it through wgpu's WebGPU backend with a result we check ourselves.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, openPage, testRng, ARTIFACTS, APP_URL } from './harness.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

async function facts(page) {
  return page.$$eval('#capabilities .fact', (rows) =>
    Object.fromEntries(rows.map((r) => [r.dataset.key, r.querySelector('dd').textContent])));
}

/// What the browser says about its adapter, asked directly, independent of the app's code.
async function rawAdapter(page) {
  return page.evaluate(async () => {
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    return {
      vendor: adapter.info.vendor,
      architecture: adapter.info.architecture,
      shaderF16: adapter.features.has('shader-f16'),
      subgroups: adapter.features.has('subgroups'),
      maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
    };
  });
}

test('capability screen shows the adapter WebGPU reports', async () => {
  const { context, page, problems } = await openPage(browser);
  await page.click('#tab-gpu');
  await page.waitForSelector('#capabilities[data-state="ready"]', { timeout: 60_000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-gpu.png'), fullPage: true });
  const shown = await facts(page);
  const raw = await rawAdapter(page);

  assert.ok(shown.adapter.includes(raw.vendor) && shown.adapter.includes(raw.architecture),
    `adapter "${shown.adapter}" vs browser ${raw.vendor} ${raw.architecture}`);
  assert.equal(shown['shader-f16'], raw.shaderF16 ? 'yes' : 'no');
  assert.equal(shown.subgroups, raw.subgroups ? 'yes' : 'no');
  assert.equal(shown.maxComputeInvocationsPerWorkgroup, String(raw.maxComputeInvocationsPerWorkgroup));
  for (const key of ['maxBufferSize', 'maxStorageBufferBindingSize', 'maxComputeWorkgroupStorageSize']) {
    assert.match(shown[key], /^\d+(\.\d)? (B|KiB|MiB|GiB)$/, `${key}: ${shown[key]}`);
  }

  // This machine has no GPU: headless Chromium's WebGPU runs on SwiftShader, without f16.
  if (!process.env.DARKROOM_E2E_ANY_ADAPTER) {
    assert.equal(raw.architecture, 'swiftshader', 'expected SwiftShader (set DARKROOM_E2E_ANY_ADAPTER=1 on a real GPU)');
    assert.equal(shown['shader-f16'], 'no');
    const notices = await page.$$eval('#capabilities .notice', (n) => n.map((e) => e.textContent));
    assert.ok(notices.some((t) => t.includes('software adapter')), notices.join(' | '));
  }
  assert.deepEqual(problems, []);
  await context.close();
});

test('a WGSL matmul runs on WebGPU and its numbers are right', async () => {
  const { context, page, problems } = await openPage(browser, { query: 'dev/?check=selftest' });
  await page.waitForSelector('#selftest:is([data-status="pass"], [data-status="fail"], [data-status="error"])', { timeout: 120_000 });
  const status = await page.getAttribute('#selftest', 'data-status');
  const text = await page.textContent('#selftest');
  assert.equal(status, 'pass', text);

  const r = await page.evaluate(() => {
    const s = window.__darkroomSelftest;
    return s && { m: s.m, k: s.k, n: s.n, seed: s.seed, passed: s.passed, output: Array.from(s.output), kernels: s.kernels };
  });
  assert.ok(r, 'the page published no GPU result');
  assert.equal(r.output.length, r.m * r.n);
  assert.ok(r.m % 64 !== 0 && r.n % 64 !== 0 && r.k % 16 !== 0, 'the check must use sizes off the tile grid');

  // Rebuild the inputs from the seed and multiply here, in float64, independently of the app.
  const rng = testRng(r.seed);
  const a = rng.vec(r.m * r.k);
  const b = rng.vec(r.k * r.n);
  let worst = 0;
  for (let i = 0; i < r.m; i++) {
    for (let j = 0; j < r.n; j++) {
      let sum = 0;
      for (let p = 0; p < r.k; p++) sum += a[i * r.k + p] * b[p * r.n + j];
      worst = Math.max(worst, Math.abs(r.output[i * r.n + j] - sum));
    }
  }
  assert.ok(worst < 1e-4, `GPU result differs from float64 by ${worst}`);
  assert.ok(r.output.some((v) => Math.abs(v) > 0.5), 'output is suspiciously small');

  // Every kernel family, compiled by the browser's own WGSL compiler, agrees with the CPU.
  const families = ['linear int8', 'linear 4-bit', 'conv2d 3x3', 'conv2d stride 2', 'attention causal',
    'attention cross', 'group norm', 'layer norm', 'GEGLU', 'quick GELU', 'concat + upsample'];
  for (const family of families) {
    const check = r.kernels.find((c) => c.name.startsWith(family) && c.dtype === 'F32');
    assert.ok(check, `no f32 check for ${family}: ${JSON.stringify(r.kernels)}`);
    assert.ok(check.passed, `${family} differs from the CPU by ${check.maxAbsErr}`);
  }
  const rows = await page.$$eval('#selftest tr.check', (trs) => trs.map((t) => t.className));
  assert.equal(rows.length, 1 + r.kernels.length);
  assert.ok(rows.every((c) => c === 'check pass'), rows.join(', '));

  await page.screenshot({ path: path.join(ARTIFACTS, 'capabilities.png'), fullPage: true });
  assert.deepEqual(problems, []);
  await context.close();
});

test('the product build has no developer pages; the developer build (dist/dev) has them', async () => {
  const wasm = async (dir) => new Uint8Array(await (await fetch(`${APP_URL}${dir}darkroom-web_bg.wasm`)).arrayBuffer());
  const [product, dev] = [await wasm(''), await wasm('dev/')];
  const has = (bytes, text) => Buffer.from(bytes).includes(Buffer.from(text));
  for (const marker of ['__darkroomSelftest', '__darkroomModelCheck', '__darkroomWeights']) {
    assert.ok(has(dev, marker), `the developer build has ${marker}`);
    assert.ok(!has(product, marker), `the product has no ${marker}`);
  }
  assert.ok(product.length < dev.length, `product ${product.length} B < developer build ${dev.length} B`);
  // Asked for a check page, the product opens the app.
  const { context, page } = await openPage(browser, { query: '?check=selftest' });
  await page.waitForSelector('#generate', { timeout: 60_000 });
  assert.equal(await page.locator('#selftest').count(), 0);
  await context.close();
});

test('without WebGPU the app says so, says what to do, and runs no kernel', async () => {
  const { context, page } = await openPage(browser, {
    initScript: () => { delete Object.getPrototypeOf(navigator).gpu; },
    query: 'dev/?check=selftest',
  });
  await page.waitForSelector('#capabilities[data-state="unavailable"]', { timeout: 60_000 });
  const text = await page.textContent('#capabilities');
  assert.match(text, /does not offer WebGPU/);
  assert.match(text, /Chrome or Edge 113/);
  assert.equal(await page.getAttribute('#selftest', 'data-status'), 'skipped');
  assert.equal(await page.evaluate(() => window.__darkroomSelftest), undefined);
  await page.screenshot({ path: path.join(ARTIFACTS, 'no-webgpu.png'), fullPage: true });
  await context.close();

  // The app itself opens on its GPU tab and says the same.
  const app = await openPage(browser, { initScript: () => { delete Object.getPrototypeOf(navigator).gpu; } });
  await app.page.waitForSelector('#capabilities[data-state="unavailable"]', { state: 'visible', timeout: 60_000 });
  assert.match(await app.page.textContent('.gpu-note'), /no WebGPU/);
  await app.context.close();
});
