// Shared set-up for the browser tests: Debian's Chromium, headless, with WebGPU on SwiftShader.
// Run through `cargo xtask test`, which builds the app and serves it at DARKROOM_URL.

import { chromium } from 'playwright-core';
import { before, after } from 'node:test';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';

export const APP_URL = process.env.DARKROOM_URL;
export const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');

// Without the background-networking flags Chromium floods the closed network with requests.
const FLAGS = [
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export async function launch({ extraArgs = [] } = {}) {
  if (!APP_URL) {
    throw new Error('DARKROOM_URL is not set: run the browser tests through `cargo xtask test`');
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  // Playwright gives every launch a fresh, temporary user-data-dir.
  return chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: [...FLAGS, ...extraArgs] });
}

/// A browser with a regular (not off-the-record) profile in a fresh temporary folder, with
/// `preferences` written into it first: for tests that need a setting an off-the-record
/// context cannot have (third-party cookies allowed, as Chrome's default profile has them).
export async function launchPersistent({ extraArgs = [], preferences = {} } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'darkroom-profile-'));
  mkdirSync(path.join(dir, 'Default'), { recursive: true });
  writeFileSync(path.join(dir, 'Default', 'Preferences'), JSON.stringify(preferences));
  return chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium', headless: true, args: [...FLAGS, ...extraArgs], viewport: { width: 900, height: 800 },
  });
}

/// A page that records console errors and failed requests, so a test can assert there were none.
/// `bypassCSP` is for the developer check pages that download from a second local origin, which
/// the app's Content-Security-Policy (rightly) forbids.
export async function openPage(browser, { initScript, query = '', bypassCSP = false, functions = {} } = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, bypassCSP });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // A failed load is reported with its URL by the response listener below.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} (${r.failure()?.errorText})`));
  for (const [name, f] of Object.entries(functions)) await page.exposeFunction(name, f);
  if (initScript) await page.addInitScript(initScript);
  await page.goto(APP_URL + query);
  await confirmAddedModels(page, query);
  return { context, page, problems };
}

/// The app adds models named in its address (`?manifest=`) only once the user confirms them:
/// confirms, as a user trusting the test's own fixtures would. Not for the widget (`embed=1`) or
/// the developer pages (`check=`).
export async function confirmAddedModels(page, query) {
  if (/[?&]manifest=/.test(query) && !/[?&](embed|check)=/.test(query)) {
    await page.click('#manifest-confirm button.add', { timeout: 60_000 });
  }
}

/// One browser and page for a test file: launched before its tests (the app opened with `query`),
/// closed after them. The returned object gets `browser`, `page`, `context` and `problems`.
export function session(query = '') {
  const shared = {};
  before(async () => {
    shared.browser = await launch();
    Object.assign(shared, await openPage(shared.browser, { query }));
  });
  after(async () => { await shared.browser?.close(); });
  return shared;
}

/// The bytes of the file a click on `selector` downloads.
export async function downloaded(page, selector) {
  const [file] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  return readFileSync(await file.path());
}

/// xorshift32, as darkroom_gpu::reference::TestRng: the same seed gives the same inputs.
export function testRng(seed) {
  let x = seed >>> 0 || 1;
  const nextU32 = () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x;
  };
  return {
    nextU32,
    nextF32: () => (nextU32() >>> 8) / 8388608 - 1,
    vec(len) { return Array.from({ length: len }, () => this.nextF32()); },
  };
}

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const FIXTURES = path.join(ROOT, 'tests', 'fixtures');
const TMP = mkdtempSync(path.join(tmpdir(), 'darkroom-e2e-'));

/// The tiny model as a single-file checkpoint, every tensor named as diffusers reads such a file
/// (tests/fixtures/ldm/tiny-sd-ldm-map.json, made and checked by tests/reference/ldm_checkpoint.py).
export function tinyLdmCheckpoint() {
  const map = JSON.parse(readFileSync(path.join(FIXTURES, 'ldm', 'tiny-sd-ldm-map.json'), 'utf8'));
  const paths = { unet: 'unet/diffusion_pytorch_model.safetensors', vae: 'vae/diffusion_pytorch_model.safetensors',
    text_encoder: 'text_encoder/model.safetensors' };
  const files = {};
  for (const [component, file] of Object.entries(paths)) {
    const bytes = readFileSync(path.join(FIXTURES, 'tiny-sd', file));
    const n = Number(bytes.readBigUInt64LE(0));
    files[component] = { bytes, header: JSON.parse(bytes.toString('utf8', 8, 8 + n)), start: 8 + n };
  }
  const header = {};
  const parts = [];
  let offset = 0;
  for (const [ldm, component, name, shape] of map) {
    const f = files[component];
    const t = f.header[name];
    const data = f.bytes.subarray(f.start + t.data_offsets[0], f.start + t.data_offsets[1]);
    header[ldm] = { dtype: t.dtype, shape, data_offsets: [offset, offset + data.length] };
    parts.push(data);
    offset += data.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, ...parts]);
}

/// The native CLI's image for the same parameters (a debug build, as the native tests use), made
/// with a model folder of tests/fixtures (tiny-sd unless `model` says otherwise).
/// `cargo xtask test` sets DARKROOM_CLI_BUILT: its native tests have just built the binary
/// from these sources, so it is used as it is.
export function cli(args, { model = 'tiny-sd' } = {}) {
  const out = path.join(TMP, `cli-${Date.now()}.png`);
  cliCommand('generate', ['--out', out, ...args], { model });
  return readFileSync(out);
}

/// Runs `darkroom COMMAND` with a fixture model at f32 (as `cli`; none with `model: null`),
/// failing the test if it fails.
export function cliCommand(command, args, { model = 'tiny-sd' } = {}) {
  if (!process.env.DARKROOM_CLI_BUILT) {
    const build = spawnSync('cargo', ['build', '--quiet', '-p', 'darkroom-cli'], { cwd: ROOT, stdio: 'inherit' });
    assert.equal(build.status, 0, 'building the CLI');
  }
  // `model: null` for commands without a model (preprocess).
  const common = model ? ['--model', path.join(FIXTURES, model), '--precision', 'f32', '--quant', 'none'] : [];
  const run = spawnSync(path.join(ROOT, 'target', 'debug', 'darkroom'), [command, ...common, '--quiet', ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR || '/tmp' } });
  assert.equal(run.status, 0, `darkroom ${command} failed: ${run.stderr}`);
  return run.stdout;
}

/// RGBA pixels of PNG bytes or of an <img>, decoded by the browser.
export async function pixels(page, { png, selector }) {
  return page.evaluate(async ({ b64, selector }) => {
    // The <img> itself, not a fetch of its blob: URL, which the app's CSP does not allow.
    const source = b64
      ? new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], { type: 'image/png' })
      : document.querySelector(selector);
    const bitmap = await createImageBitmap(source);
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext('2d');
    ctx.drawImage(bitmap, 0, 0);
    return { width: bitmap.width, height: bitmap.height, data: Array.from(ctx.getImageData(0, 0, bitmap.width, bitmap.height).data) };
  }, { b64: png ? png.toString('base64') : null, selector });
}

export function maxDiff(a, b) {
  assert.deepEqual([a.width, a.height], [b.width, b.height]);
  let worst = 0;
  for (let i = 0; i < a.data.length; i++) worst = Math.max(worst, Math.abs(a.data[i] - b.data[i]));
  return worst;
}

/// The text chunks of a PNG.
export function pngText(bytes) {
  const out = {};
  for (let at = 8; at < bytes.length;) {
    const len = bytes.readUInt32BE(at);
    const type = bytes.toString('latin1', at + 4, at + 8);
    const data = bytes.subarray(at + 8, at + 8 + len);
    if (type === 'tEXt' || type === 'iTXt') {
      const zero = data.indexOf(0);
      const key = data.toString('latin1', 0, zero);
      out[key] = type === 'tEXt' ? data.toString('latin1', zero + 1) : data.toString('utf8', zero + 5).replace(/^[^\0]*\0[^\0]*\0/, '');
    }
    at += 12 + len;
  }
  return out;
}

/// Sets a form field as a user typing would, and lets the app see the change.
export async function setField(page, selector, value) {
  await page.fill(selector, String(value));
  await page.dispatchEvent(selector, 'change');
}

/// The app's query part that adds a fixture manifest (tests/fixtures/NAME.toml) with its files
/// served from tests/fixtures/FOLDER/ (NAME unless given).
export function fixtureModel(name, folder = name) {
  return `manifest=/fixtures/${name}.toml&base=${encodeURIComponent(`${APP_URL}fixtures/${folder}/`)}`;
}

/// Downloads a model listed under Models (accepting its license) and waits until it is stored.
export async function downloadModel(page, id) {
  await page.click('#tab-models');
  await page.click(`[data-model="${id}"] button.download`);
  await page.click(`[data-model="${id}"] .license button.primary`);
  await page.waitForSelector(`[data-model="${id}"][data-state="complete"]`, { timeout: 120_000 });
}

/// Generates with the form's settings (Ctrl+Enter) and waits until `images` results show and the
/// run has ended.
export async function generateImages(page, images) {
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction((n) => document.querySelectorAll('#results figure img').length === n
    && !document.querySelector('#run'), images, { timeout: 240_000 });
}
