// The app as a user meets it, with the tiny test model served beside the app in the manifest
// layout (tests/fixtures/tiny-sd.toml): download it (progress shown), generate with a fixed
// seed and compare the pixels with the native CLI's image for the same parameters, download the
// PNG and read its parameters, reload (no second download, the gallery keeps the image, "use
// these settings" restores every field), cancel mid-generation, inpaint with a painted mask
// (again against the CLI with the same mask), then go offline and generate from the service
// worker's copy of the app. Every request of the session is recorded: none may leave the
// page's origin or carry the prompt.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { launch, openPage, ARTIFACTS, APP_URL, cli, cliCommand, pixels, maxDiff, pngText, tinyLdmCheckpoint, setField } from './harness.mjs';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const FIXTURES = path.join(ROOT, 'tests', 'fixtures');
const PROMPT = 'a lighthouse on a cliff at dusk, oil painting';
const NEGATIVE = 'blurry';
const QUERY = `?manifest=/fixtures/tiny-sd.toml&base=${encodeURIComponent(`${APP_URL}fixtures/tiny-sd/`)}`
  + `&manifest=/fixtures/taesd-test.toml&base=${encodeURIComponent(`${APP_URL}fixtures/taesd-test/`)}`
  + `&manifest=/fixtures/tiny-controlnet.toml&base=${encodeURIComponent(`${APP_URL}fixtures/controlnet/tiny-controlnet-a/`)}`
  + `&manifest=/fixtures/depth-test.toml&base=${encodeURIComponent(`${APP_URL}fixtures/depth-anything/model/`)}`;
const TMP = mkdtempSync(path.join(tmpdir(), 'darkroom-app-'));

let browser;
let session;
const requests = [];
/// Every read-write IndexedDB transaction the page itself (not a worker) opened.
const pageWrites = [];

/// Reports the page's read-write IndexedDB transactions: the worker is to be the only writer.
function watchPageWrites() {
  const open = IDBDatabase.prototype.transaction;
  IDBDatabase.prototype.transaction = function (stores, mode, ...rest) {
    if (mode === 'readwrite') window.darkroomPageWrite(`${this.name}: ${[].concat(stores).join(',')}`);
    return open.call(this, stores, mode, ...rest);
  };
}

before(async () => {
  browser = await launch();
  session = await openPage(browser, {
    query: QUERY,
    initScript: watchPageWrites,
    functions: { darkroomPageWrite: (what) => pageWrites.push(what) },
  });
  const record = (r) => requests.push({ url: r.url(), body: r.postData() ?? '' });
  session.context.on('request', record);
});
after(async () => { await browser?.close(); });

/// A LoRA file of the same size with every up matrix negated (the sign bit of each element).
function negatedUp(bytes) {
  const out = Buffer.from(bytes);
  const n = Number(out.readBigUInt64LE(0));
  const header = JSON.parse(out.toString('utf8', 8, 8 + n));
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__' || !/lora_up|lora_B/.test(name)) continue;
    const width = { F32: 4, F16: 2, BF16: 2 }[t.dtype];
    assert.ok(width, `dtype ${t.dtype}`);
    for (let at = 8 + n + t.data_offsets[0]; at < 8 + n + t.data_offsets[1]; at += width) out[at + width - 1] ^= 0x80;
  }
  return out;
}

/// Drops a file on the page as a user dragging it from their desktop would.
async function dropFile(page, bytes, name, type) {
  await page.evaluate(({ b64, name, type }) => {
    const file = new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, { type });
    const transfer = new DataTransfer();
    transfer.items.add(file);
    document.body.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
  }, { b64: bytes.toString('base64'), name, type });
}

/// A quick run's settings (Euler, 2 steps, CFG 7.5, seed 21, 64x48, no negative), set in the
/// form; returns the same settings as CLI arguments.
async function quickSettings(page, prompt) {
  await setField(page, '#prompt', prompt);
  await page.fill('#negative', '');
  await page.selectOption('#sampler', 'euler');
  await setField(page, '#steps', 2);
  await setField(page, '#cfg', 7.5);
  await setField(page, '#seed', 21);
  await setField(page, '#width', 64);
  await setField(page, '#height', 48);
  return ['--sampler', 'euler', '--steps', '2', '--cfg', '7.5', '--seed', '21', '--width', '64', '--height', '48'];
}

async function generateAndWait(page, count = 1) {
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction((n) => document.querySelectorAll('#results figure img').length >= n
    && !document.querySelector('#run'), count, { timeout: 240_000 });
  assert.equal(await page.$('#generate-error'), null, await page.textContent('#generate-error').catch(() => ''));
}

const settings = (page) => page.evaluate(() => Object.fromEntries(
  ['#prompt', '#negative', '#sampler', '#steps', '#cfg', '#seed', '#width', '#height'].map((s) => [s, document.querySelector(s).value])));

test('download, generate (pixels as the CLI), PNG parameters, reload, gallery, use these settings', async () => {
  const { page, problems } = session;
  await page.waitForSelector('[data-model="tiny-sd"]', { state: 'attached' });
  await page.click('#tab-models');
  await page.click('[data-model="tiny-sd"] button.download');
  // The license is shown once, before anything downloads.
  await page.waitForSelector('[data-model="tiny-sd"] .license');
  assert.match(await page.textContent('[data-model="tiny-sd"] .license'), /MIT \(test fixture\)/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-license.png'), fullPage: true });
  await page.click('[data-model="tiny-sd"] .license button.primary');
  await page.waitForSelector('[data-model="tiny-sd"][data-state="complete"]', { timeout: 120_000 });
  assert.match(await page.textContent('[data-model="tiny-sd"] .model-state'), /on this device/);
  // Each file's size and sha256 as the store sealed them: the manifest's.
  await page.click('[data-model="tiny-sd"] details.integrity summary');
  const manifest = readFileSync(path.join(FIXTURES, 'tiny-sd.toml'), 'utf8');
  const rows = await page.$$eval('[data-model="tiny-sd"] details.integrity tbody tr',
    (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
  const files = [...manifest.matchAll(/path = "([^"]+)"[\s\S]*?size = (\d+)[\s\S]*?sha256 = "([0-9a-f]{64})"/g)];
  assert.equal(rows.length, files.length, JSON.stringify(rows));
  for (const [, file, size, sha] of files) {
    assert.ok(rows.some(([p, s, h]) => p === file && s === size && h === sha), `${file} ${size} ${sha} in ${JSON.stringify(rows)}`);
  }
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-models.png'), fullPage: true });

  await page.click('#tab-generate');
  assert.equal(await page.inputValue('#model'), 'tiny-sd');
  await page.fill('#prompt', PROMPT);
  await page.fill('#negative', NEGATIVE);
  await page.selectOption('#sampler', 'euler_a');
  await setField(page, '#steps', 4);
  await setField(page, '#cfg', 7.5);
  await setField(page, '#seed', 1234);
  await setField(page, '#width', 64);
  await setField(page, '#height', 48);
  await page.keyboard.press('Control+Enter');
  // Progress and the live preview show while it runs: without TAESD, the latents mapped to
  // colour, one pixel per latent.
  await page.waitForSelector('#preview', { timeout: 120_000 });
  assert.equal(await page.$eval('#preview', (img) => img.complete ? img.naturalWidth : 8), 8);
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-generating.png'), fullPage: true });
  await page.waitForFunction(() => document.querySelectorAll('#results figure img').length === 1 && !document.querySelector('#run'),
    null, { timeout: 240_000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-generated.png'), fullPage: true });

  const ours = await pixels(page, { selector: '#results figure img' });
  const theirs = await pixels(page, {
    png: cli(['--prompt', PROMPT, '--negative', NEGATIVE, '--sampler', 'euler_a', '--steps', '4', '--cfg', '7.5',
      '--seed', '1234', '--width', '64', '--height', '48']),
  });
  const worst = maxDiff(ours, theirs);
  assert.ok(worst <= 2, `browser vs CLI: worst pixel differs by ${worst}/255`);

  // The PNG as a user downloads it carries A1111's parameters.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#results a.download')]);
  const png = readFileSync(await download.path());
  const text = pngText(png).parameters;
  assert.ok(text, 'the PNG has a parameters chunk');
  assert.match(text, new RegExp(`^${PROMPT}\\nNegative prompt: ${NEGATIVE}\\n`));
  for (const part of ['Steps: 4', 'Sampler: Euler a', 'CFG scale: 7.5', 'Seed: 1234', 'Size: 64x48', 'Model: tiny-sd']) {
    assert.ok(text.includes(part), `${part} in ${text}`);
  }

  // Reload: the model is not downloaded again, the gallery still holds the image.
  const before = requests.length;
  await page.reload();
  await page.waitForSelector('[data-model="tiny-sd"][data-state="complete"]', { state: 'attached', timeout: 60_000 });
  const weightRequests = requests.slice(before).filter((r) => r.url.includes('/fixtures/tiny-sd/'));
  assert.deepEqual(weightRequests.map((r) => r.url), [], 'no weights fetched after the reload');
  await page.click('#tab-gallery');
  await page.waitForSelector('#gallery .gallery-item');
  assert.equal(await page.locator('#gallery .gallery-item').count(), 1);
  await page.fill('#gallery-search', 'lighthouse');
  assert.equal(await page.locator('#gallery .gallery-item').count(), 1);
  await page.fill('#gallery-search', 'submarine');
  assert.equal(await page.locator('#gallery .gallery-item').count(), 0);
  await page.fill('#gallery-search', '');
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-gallery.png'), fullPage: true });

  // "Use these settings" restores every field the image was made with.
  await page.click('#tab-generate');
  await page.fill('#prompt', 'something else');
  await page.fill('#negative', '');
  await page.selectOption('#sampler', 'ddim');
  await setField(page, '#steps', 9);
  await setField(page, '#cfg', 3);
  await setField(page, '#seed', 5);
  await page.click('#tab-gallery');
  await page.click('#gallery .gallery-item button.use-settings');
  const made = {
    '#prompt': PROMPT, '#negative': NEGATIVE, '#sampler': 'euler_a', '#steps': '4', '#cfg': '7.5', '#seed': '1234',
    '#width': '64', '#height': '48',
  };
  assert.deepEqual(await settings(page), made);

  // Dropping the downloaded PNG restores its settings the same way.
  await page.fill('#prompt', 'something else');
  await setField(page, '#seed', 5);
  await setField(page, '#steps', 9);
  await dropFile(page, png, 'darkroom-1234.png', 'image/png');
  await page.waitForFunction((p) => document.querySelector('#prompt').value === p, PROMPT);
  assert.deepEqual(await settings(page), made);
  assert.equal(await page.$('.mask-stack'), null, 'a PNG with parameters is not taken as an init image');
  assert.deepEqual(problems, []);
});

test('a local single-file checkpoint imports into the browser and makes its diffusers folder\'s image', async () => {
  const { page, problems } = session;
  const file = path.join(TMP, 'My Checkpoint.safetensors');
  writeFileSync(file, tinyLdmCheckpoint());
  await page.click('#tab-models');
  await page.setInputFiles('#import-file', file);
  assert.equal(await page.inputValue('#import-id'), 'my-checkpoint');
  await page.click('#import-button');
  await page.waitForSelector('#import-result', { timeout: 120_000 });
  assert.match(await page.textContent('#import-result'), /is ready/);
  await page.waitForSelector('[data-model="my-checkpoint"][data-state="complete"]', { timeout: 30_000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-import.png'), fullPage: true });
  await page.click('[data-model="my-checkpoint"] button.use');
  assert.equal(await page.inputValue('#model'), 'my-checkpoint');
  const args = await quickSettings(page, 'a red boat');
  await generateAndWait(page);
  const ours = await pixels(page, { selector: '#results figure img' });
  const theirs = await pixels(page, { png: cli(['--prompt', 'a red boat', ...args]) });
  const worst = maxDiff(ours, theirs);
  assert.ok(worst <= 2, `imported checkpoint vs the diffusers folder through the CLI: worst pixel ${worst}/255`);
  // Deleting it removes it from the list; the downloaded models stay.
  await page.click('#tab-models');
  await page.click('[data-model="my-checkpoint"] button.delete');
  await page.waitForSelector('[data-model="my-checkpoint"]', { state: 'detached' });
  assert.equal(await page.getAttribute('[data-model="tiny-sd"]', 'data-state'), 'complete');
  await page.click('#tab-generate');
  await page.selectOption('#model', 'tiny-sd');
  assert.deepEqual(problems, []);
});

test('with TAESD downloaded the live preview is its full-size decode', async () => {
  const { page, problems } = session;
  await page.click('#tab-models');
  await page.click('[data-model="taesd-test"] button.download');
  await page.click('[data-model="taesd-test"] .license button.primary');
  await page.waitForSelector('[data-model="taesd-test"][data-state="complete"]', { timeout: 60_000 });
  await page.click('#tab-generate');
  await setField(page, '#steps', 6);
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction(() => {
    const img = document.querySelector('#preview');
    return img && img.complete && img.naturalWidth === 64 && img.naturalHeight === 48;
  }, null, { timeout: 120_000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-taesd-preview.png'), fullPage: true });
  await page.waitForSelector('#run', { state: 'detached', timeout: 240_000 });
  assert.equal(await page.$('#generate-error'), null);
  assert.deepEqual(problems, []);
});

test('Esc cancels mid-generation and the app stays usable', async () => {
  const { page, problems } = session;
  await page.click('#tab-generate');
  await setField(page, '#steps', 40);
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction(() => /Denoising [1-9]/.test(document.querySelector('#run-status')?.textContent ?? ''),
    null, { timeout: 120_000 });
  await page.keyboard.press('Escape');
  await page.waitForSelector('#run', { state: 'detached', timeout: 60_000 });
  assert.equal(await page.$('#generate-error'), null, 'a cancel is not an error');
  assert.equal(await page.locator('#results figure').count(), 0, 'no image from the cancelled run');
  await setField(page, '#steps', 2);
  await generateAndWait(page);
  assert.deepEqual(problems, []);
});

test('a size the UNet\'s factor does not divide (72x40 on a factor-16 model) makes the CLI\'s image', async () => {
  const { page, problems } = session;
  await page.click('#tab-generate');
  const args = await quickSettings(page, 'a harbour at noon');
  await setField(page, '#width', 72);
  await setField(page, '#height', 40);
  await generateAndWait(page);
  const ours = await pixels(page, { selector: '#results figure img' });
  assert.deepEqual([ours.width, ours.height], [72, 40]);
  const sized = args.map((a, i) => ({ '--width': '72', '--height': '40' })[args[i - 1]] ?? a);
  const theirs = await pixels(page, { png: cli(['--prompt', 'a harbour at noon', ...sized]) });
  const worst = maxDiff(ours, theirs);
  assert.ok(worst <= 2, `72x40: browser vs CLI worst pixel ${worst}/255`);
  // And a size that is not a multiple of 8 is refused by the recipe's rule, naming the fix.
  await setField(page, '#width', 70);
  await page.keyboard.press('Control+Enter');
  await page.waitForSelector('#generate-error');
  assert.match(await page.textContent('#generate-error'), /multiples of 8.*pick a preset/s);
  await setField(page, '#width', 64);
  await setField(page, '#height', 48);
  assert.deepEqual(problems, []);
});

test('a LoRA imported in the Models tab applies through its prompt tag as the CLI applies it', async () => {
  const { page, problems } = session;
  const loraDir = path.join(FIXTURES, 'lora');
  const prompt = 'a red boat <lora:tiny-lora:0.8>';
  // Before it is imported, the tag is refused with what to do, and nothing runs.
  await page.click('#tab-generate');
  await setField(page, '#prompt', prompt);
  await page.keyboard.press('Control+Enter');
  const error = await page.waitForSelector('#generate-error', { timeout: 10_000 });
  assert.match(await error.textContent(), /LoRA `tiny-lora`.*not in this browser.*import it under Models/);
  assert.equal(await page.$('#run'), null, 'nothing started');

  // A file that is not a LoRA is refused and leaves nothing behind.
  await page.click('#tab-models');
  await page.setInputFiles('#lora-file', path.join(FIXTURES, 'tiny-sd', 'vae', 'diffusion_pytorch_model.safetensors'));
  await page.fill('#lora-name', 'not-a-lora');
  await page.click('#lora-import');
  await page.waitForSelector('#lora-result.error', { timeout: 30_000 });
  assert.match(await page.textContent('#lora-result'), /not a LoRA/);
  assert.equal(await page.$('[data-lora]'), null);

  await page.setInputFiles('#lora-file', path.join(loraDir, 'tiny-lora.safetensors'));
  assert.equal(await page.inputValue('#lora-name'), 'tiny-lora');
  await page.click('#lora-import');
  await page.waitForSelector('#lora-result.ok', { timeout: 30_000 });
  assert.match(await page.textContent('#lora-result'), /tiny-lora is ready.*<lora:tiny-lora:1>/);
  await page.waitForSelector('[data-lora="tiny-lora"]');
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-loras.png'), fullPage: true });
  // "Add to prompt" writes the tag into the prompt and shows it.
  await page.click('#tab-generate');
  await setField(page, '#prompt', 'a red boat');
  await page.click('#tab-models');
  await page.click('[data-lora="tiny-lora"] button.add-lora');
  await page.waitForSelector('#prompt', { state: 'visible' });
  assert.equal(await page.inputValue('#prompt'), 'a red boat <lora:tiny-lora:1>');
  // So does its chip under the prompt, once: a LoRA the prompt names already is not added again.
  await setField(page, '#prompt', 'a red boat');
  await page.click('[data-lora-chip="tiny-lora"]');
  await page.click('[data-lora-chip="tiny-lora"]');
  assert.equal(await page.inputValue('#prompt'), 'a red boat <lora:tiny-lora:1>');
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-lora-chips.png'), fullPage: true });

  const args = await quickSettings(page, prompt);
  await generateAndWait(page);
  const withLora = await pixels(page, { selector: '#results figure img' });
  const cliWith = await pixels(page, { png: cli(['--prompt', prompt, '--lora-dir', loraDir, ...args]) });
  const worst = maxDiff(withLora, cliWith);
  assert.ok(worst <= 2, `LoRA in the browser vs the CLI: worst pixel ${worst}/255`);
  const infotext = await page.getAttribute('#results figure img', 'alt');
  assert.ok(infotext.startsWith(`${prompt}\n`), `the image's parameters keep the tag: ${infotext}`);

  // Without the tag the model is reloaded without the LoRA: the plain model's image again.
  await setField(page, '#prompt', 'a red boat');
  await generateAndWait(page);
  const without = await pixels(page, { selector: '#results figure img' });
  const cliWithout = await pixels(page, { png: cli(['--prompt', 'a red boat', ...args]) });
  assert.ok(maxDiff(without, cliWithout) <= 2, 'without the tag, the plain model');
  assert.ok(maxDiff(withLora, without) > 8, 'the LoRA visibly changes the image');

  await page.click('#tab-models');
  await page.click('[data-lora="tiny-lora"] button.delete');
  await page.waitForSelector('[data-lora="tiny-lora"]', { state: 'detached' });
  await page.waitForSelector('#no-loras');

  // Another file of the same size under the same name (every up matrix negated) is merged anew,
  // not mistaken for the one the loaded model was made with.
  const otherDir = mkdtempSync(path.join(TMP, 'lora-'));
  writeFileSync(path.join(otherDir, 'tiny-lora.safetensors'), negatedUp(readFileSync(path.join(loraDir, 'tiny-lora.safetensors'))));
  await page.setInputFiles('#lora-file', path.join(otherDir, 'tiny-lora.safetensors'));
  await page.click('#lora-import');
  await page.waitForSelector('#lora-result.ok', { timeout: 30_000 });
  await page.click('#tab-generate');
  await setField(page, '#prompt', prompt);
  await generateAndWait(page);
  const negated = await pixels(page, { selector: '#results figure img' });
  const cliNegated = await pixels(page, { png: cli(['--prompt', prompt, '--lora-dir', otherDir, ...args]) });
  assert.ok(maxDiff(negated, cliNegated) <= 2, 'the re-imported LoRA as the CLI merges it');
  assert.ok(maxDiff(negated, withLora) > 8, 'not the earlier LoRA\'s image');
  await page.click('#tab-models');
  await page.click('[data-lora="tiny-lora"] button.delete');
  await page.waitForSelector('#no-loras');
  await page.click('#tab-generate');
  await setField(page, '#prompt', 'a red boat');
  assert.deepEqual(problems, []);
});

test('inpainting with a painted mask matches the CLI with the same mask', async () => {
  const { page, problems } = session;
  await page.click('#tab-generate');
  await page.setInputFiles('#init-file', path.join(FIXTURES, 'pipeline', 'init.png'));
  await page.waitForSelector('.mask-stack img');
  await page.check('#inpaint');
  await setField(page, '#steps', 4);
  await setField(page, '#seed', 77);
  await page.selectOption('#sampler', 'euler');
  // A stroke across the middle of the image.
  await page.locator('#mask-canvas').scrollIntoViewIfNeeded();
  const box = await page.locator('#mask-canvas').boundingBox();
  await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.5);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.8, box.y + box.height * 0.5, { steps: 8 });
  await page.mouse.up();
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-inpaint-mask.png'), fullPage: true });
  const mask = Buffer.from(await page.evaluate(() => {
    const src = document.querySelector('#mask-canvas');
    const data = src.getContext('2d').getImageData(0, 0, src.width, src.height);
    for (let i = 0; i < data.data.length; i += 4) {
      const v = data.data[i + 3] > 127 ? 255 : 0;
      data.data.set([v, v, v, 255], i);
    }
    const out = document.createElement('canvas');
    [out.width, out.height] = [src.width, src.height];
    out.getContext('2d').putImageData(data, 0, 0);
    return out.toDataURL('image/png').split(',')[1];
  }), 'base64');
  const painted = await page.evaluate(() => {
    const c = document.querySelector('#mask-canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) n += d[i] > 127;
    return n / (c.width * c.height);
  });
  assert.ok(painted > 0.05 && painted < 0.9, `the stroke painted ${painted} of the mask`);
  await generateAndWait(page);
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-inpainted.png'), fullPage: true });
  const ours = await pixels(page, { selector: '#results figure img' });
  const maskFile = path.join(TMP, 'mask.png');
  (await import('node:fs')).writeFileSync(maskFile, mask);
  const strength = await page.inputValue('#strength');
  const theirs = await pixels(page, {
    png: cli(['--prompt', await page.inputValue('#prompt'), '--negative', await page.inputValue('#negative'),
      '--sampler', 'euler', '--steps', '4', '--cfg', await page.inputValue('#cfg'), '--seed', '77',
      '--init', path.join(FIXTURES, 'pipeline', 'init.png'), '--mask', maskFile, '--strength', strength]),
  });
  const worst = maxDiff(ours, theirs);
  assert.ok(worst <= 2, `inpainting, browser vs CLI: worst pixel differs by ${worst}/255`);
  assert.deepEqual(problems, []);
});

test('outpainting: extending the canvas to the right repaints the new strip as the CLI does', async () => {
  const { page, problems } = session;
  await page.click('text=Remove image');
  await dropFile(page, readFileSync(path.join(FIXTURES, 'pipeline', 'init.png')), 'photo.png', 'image/png');
  await page.waitForSelector('.mask-stack img');
  await setField(page, '#extend-by', 16);
  await page.click('#extend-right');
  await page.waitForFunction(() => document.querySelector('#width').value === '80');
  assert.equal(await page.inputValue('#height'), '48');
  assert.ok(await page.isChecked('#inpaint'), 'the new area is masked for inpainting');
  await setField(page, '#seed', 99);
  await generateAndWait(page);
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-outpainted.png'), fullPage: true });
  const ours = await pixels(page, { selector: '#results figure img' });
  assert.deepEqual([ours.width, ours.height], [80, 48]);
  const theirs = await pixels(page, {
    png: cli(['--prompt', await page.inputValue('#prompt'), '--negative', await page.inputValue('#negative'),
      '--sampler', await page.inputValue('#sampler'), '--steps', await page.inputValue('#steps'),
      '--cfg', await page.inputValue('#cfg'), '--seed', '99', '--init', path.join(FIXTURES, 'pipeline', 'init.png'),
      '--outpaint', '0,0,16,0']),
  });
  const worst = maxDiff(ours, theirs);
  assert.ok(worst <= 2, `outpainting, browser vs CLI: worst pixel differs by ${worst}/255`);
  await page.click('text=Remove image');
  assert.deepEqual(problems, []);
});

/// The PNG bytes of the image an <img> shows (through a canvas: the app's CSP does not let the
/// page fetch its blob: URLs).
async function shownPng(page, selector) {
  return Buffer.from(await page.evaluate(async (selector) => {
    const img = document.querySelector(selector);
    await img.decode();
    const canvas = new OffscreenCanvas(img.naturalWidth, img.naturalHeight);
    canvas.getContext('2d').drawImage(img, 0, 0);
    const bytes = new Uint8Array(await (await canvas.convertToBlob({ type: 'image/png' })).arrayBuffer());
    let text = '';
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text);
  }, selector), 'base64');
}

test('a control unit with a drawn scribble makes the CLI\'s image from the same map', async () => {
  const { page, problems } = session;
  await page.click('#tab-models');
  await page.click('[data-model="tiny-controlnet"] button.download');
  await page.click('[data-model="tiny-controlnet"] .license button.primary');
  await page.waitForSelector('[data-model="tiny-controlnet"][data-state="complete"]', { timeout: 60_000 });
  await page.click('#tab-generate');
  const args = await quickSettings(page, 'a castle on a hill');
  await page.click('#add-control');
  const unit = page.locator('.control-unit').first();
  assert.equal(await unit.locator('.control-model').inputValue(), 'tiny-controlnet', 'the downloaded ControlNet is picked');
  await unit.locator('.control-draw').click();
  assert.equal(await unit.locator('.control-pre').inputValue(), 'scribble');
  // Mouse coordinates are the viewport's: the canvas must be on screen (the form is long).
  await unit.locator('.control-canvas').scrollIntoViewIfNeeded();
  const box = await unit.locator('.control-canvas').boundingBox();
  for (const [x0, y0, x1, y1] of [[0.1, 0.8, 0.5, 0.15], [0.5, 0.15, 0.9, 0.7]]) {
    await page.mouse.move(box.x + box.width * x0, box.y + box.height * y0);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * x1, box.y + box.height * y1, { steps: 10 });
    await page.mouse.up();
  }
  await page.waitForSelector('.control-unit .control-map');
  await setField(page, '.control-unit .control-weight', 0.9);
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-control-unit.png'), fullPage: true });
  // The map the unit shows is the one the ControlNet sees.
  const map = await shownPng(page, '.control-unit .control-map');
  const mapPixels = await pixels(page, { png: map });
  assert.deepEqual([mapPixels.width, mapPixels.height], [64, 48], 'drawn at the output size');
  let white = 0;
  for (let i = 0; i < mapPixels.data.length; i += 4) white += mapPixels.data[i] === 255;
  const share = white / (64 * 48);
  assert.ok(share > 0.03 && share < 0.5, `the strokes cover ${share} of the map`);
  await generateAndWait(page);
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-control-generated.png'), fullPage: true });
  const ours = await pixels(page, { selector: '#results figure img' });
  const mapFile = path.join(TMP, 'scribble.png');
  writeFileSync(mapFile, map);
  const net = path.join(FIXTURES, 'controlnet', 'tiny-controlnet-a');
  const theirs = await pixels(page, {
    png: cli(['--prompt', 'a castle on a hill', ...args, '--control', `model=${net},image=${mapFile},pre=scribble,weight=0.9`]),
  });
  const worst = maxDiff(ours, theirs);
  assert.ok(worst <= 2, `ControlNet, browser vs CLI: worst pixel differs by ${worst}/255`);
  const plain = await pixels(page, { png: cli(['--prompt', 'a castle on a hill', ...args]) });
  assert.ok(maxDiff(ours, plain) > 8, 'the control unit changes the image');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#results a.download')]);
  const text = pngText(readFileSync(await download.path())).parameters;
  assert.match(text, /ControlNet 0: "Module: scribble_xdog, Model: tiny-controlnet, Weight: 0.9, /);
  await page.click('.control-unit .control-remove');
  assert.equal(await page.locator('.control-unit').count(), 0);
  assert.deepEqual(problems, []);
});

test('a depth unit shows the depth map the CLI makes and generates the CLI\'s image', async () => {
  const { page, problems } = session;
  await page.click('#tab-generate');
  const args = await quickSettings(page, 'a quiet harbour');
  await page.click('#add-control');
  const unit = page.locator('.control-unit').first();
  const photo = path.join(FIXTURES, 'clip-score', 'odd.png');
  await unit.locator('.control-file').setInputFiles(photo);
  await unit.locator('.control-pre').selectOption('depth');
  // Without a depth model the unit says what to download.
  await page.waitForSelector('.control-unit p.error');
  assert.match(await unit.locator('p.error').textContent(), /download it under Models/);
  await page.click('#tab-models');
  await page.click('[data-model="tiny-depth"] button.download');
  await page.click('[data-model="tiny-depth"] .license button.primary');
  await page.waitForSelector('[data-model="tiny-depth"][data-state="complete"]', { timeout: 60_000 });
  await page.click('#tab-generate');
  await page.waitForSelector('.control-unit .control-map', { timeout: 60_000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-control-depth.png'), fullPage: true });
  const map = await pixels(page, { png: await shownPng(page, '.control-unit .control-map') });
  const mapFile = path.join(TMP, 'depth.png');
  cliCommand('preprocess', ['--pre', 'depth', '--in', photo, '--out', mapFile, '--depth-model',
    path.join(FIXTURES, 'depth-anything', 'model')], { model: null });
  const theirMap = await pixels(page, { png: readFileSync(mapFile) });
  assert.deepEqual([map.width, map.height], [97, 61]);
  let equal = 0;
  let worst = 0;
  for (let i = 0; i < map.data.length; i += 4) {
    const d = Math.abs(map.data[i] - theirMap.data[i]);
    equal += d === 0;
    worst = Math.max(worst, d);
  }
  assert.ok(equal >= 0.99 * map.width * map.height && worst <= 1, `depth maps: ${equal} equal, worst ${worst}`);
  await generateAndWait(page);
  const ours = await pixels(page, { selector: '#results figure img' });
  const net = path.join(FIXTURES, 'controlnet', 'tiny-controlnet-a');
  const theirs = await pixels(page, {
    png: cli(['--prompt', 'a quiet harbour', ...args, '--control', `model=${net},image=${photo},pre=depth`,
      '--depth-model', path.join(FIXTURES, 'depth-anything', 'model')]),
  });
  const diff = maxDiff(ours, theirs);
  assert.ok(diff <= 2, `depth unit, browser vs CLI: worst pixel differs by ${diff}/255`);
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#results a.download')]);
  assert.match(pngText(readFileSync(await download.path())).parameters, /ControlNet 0: "Module: depth_anything_v2, Model: tiny-controlnet, /);
  await page.click('.control-unit .control-remove');
  assert.deepEqual(problems, []);
});

test('offline after the first visit: the app reloads from the service worker and generates', async () => {
  const { context, page } = session;
  await page.evaluate(() => navigator.serviceWorker.ready);
  // One online reload so the service worker controls the page and has seen the manifest URL.
  await page.reload();
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 30_000 });
  await context.setOffline(true);
  try {
    await page.reload();
    await page.waitForSelector('[data-model="tiny-sd"][data-state="complete"]', { state: 'attached', timeout: 60_000 });
    await page.click('#tab-generate');
    await page.fill('#prompt', 'offline: a quiet harbour');
    await setField(page, '#steps', 2);
    await setField(page, '#width', 64);
    await setField(page, '#height', 48);
    await generateAndWait(page);
    await page.screenshot({ path: path.join(ARTIFACTS, 'app-offline.png'), fullPage: true });
  } finally {
    await context.setOffline(false);
  }
});

test('privacy: every request of the session stayed on the page origin and none carried a prompt', async () => {
  const origin = new URL(APP_URL).origin;
  assert.ok(requests.some((r) => r.url.includes('/fixtures/tiny-sd/unet/')), 'the worker\'s downloads were recorded');
  const elsewhere = requests.filter((r) => !r.url.startsWith(origin) && !r.url.startsWith('blob:') && !r.url.startsWith('data:'));
  assert.deepEqual(elsewhere.map((r) => r.url), []);
  for (const words of [PROMPT, 'lighthouse', 'quiet harbour', NEGATIVE]) {
    const leaked = requests.filter((r) => decodeURIComponent(r.url).includes(words) || r.body.includes(words));
    assert.deepEqual(leaked.map((r) => r.url), [], `"${words}" left the page`);
  }
  // The policy the browser enforces allows no other host but Hugging Face's.
  const csp = await session.page.getAttribute('meta[http-equiv="Content-Security-Policy"]', 'content');
  assert.match(csp, /connect-src 'self' https:\/\/huggingface\.co https:\/\/\*\.huggingface\.co https:\/\/\*\.hf\.co;/);
  const blocked = await session.page.evaluate(() => fetch('http://127.0.0.2:9/beacon').then(() => 'sent', (e) => String(e)));
  assert.notEqual(blocked, 'sent', 'a request to another host is refused');
  // The browser reports the refusal it was asked to make; that is not a problem of the app.
  const refused = (p) => p.includes('127.0.0.2:9/beacon');
  assert.ok(session.problems.some(refused), 'the refusal was reported');
  session.problems.splice(0, session.problems.length, ...session.problems.filter((p) => !refused(p)));
});

test('the worker is the only writer of the browser\'s stores: downloads, imports, the gallery and deletions', async () => {
  const { page } = session;
  // Deleting from the gallery goes through the worker too.
  await page.click('#tab-gallery');
  await page.waitForSelector('#gallery .gallery-item');
  const before = await page.locator('#gallery .gallery-item').count();
  await page.click('#gallery .gallery-item button.delete');
  await page.waitForFunction((n) => document.querySelectorAll('#gallery .gallery-item').length === n, before - 1,
    { timeout: 30_000 });
  // Everything above downloaded, imported, generated into the gallery and deleted.
  assert.deepEqual(pageWrites, []);
});

test('a damaged model says so, and Delete all empties the model store', async () => {
  const { page, problems } = session;
  // A stored file whose length no longer matches the manifest's.
  await page.evaluate(() => new Promise((resolve, reject) => {
    const open = indexedDB.open('darkroom-weights');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const tx = open.result.transaction('files', 'readwrite');
      const files = tx.objectStore('files');
      const key = 'tiny-sd/vae/config.json';
      const get = files.get(key);
      get.onsuccess = () => { files.put({ ...get.result, total: get.result.total + 1 }, key); };
      tx.oncomplete = () => { open.result.close(); resolve(); };
      tx.onerror = () => reject(tx.error);
    };
  }));
  // That write was the test's own; from here on the page writes nothing.
  pageWrites.length = 0;
  await page.reload();
  await page.click('#tab-models');
  await page.waitForSelector('[data-model="tiny-sd"][data-state="corrupt"]', { timeout: 30_000 });
  assert.match(await page.textContent('[data-model="tiny-sd"] .model-state'), /damaged/);
  await page.click('#delete-all');
  // tiny-sd, the TAESD test weights, the tiny ControlNet and the tiny depth model.
  assert.match(await page.textContent('.delete-all'), /Delete 4 models/);
  await page.click('#delete-all-confirm');
  await page.waitForFunction(() => [...document.querySelectorAll('.model')].every((m) => m.dataset.state === 'absent'),
    null, { timeout: 30_000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-models-deleted.png'), fullPage: true });
  assert.deepEqual(pageWrites, [], 'Delete all went through the worker');
  // A reload aborts the old page's requests in flight; nothing else may have gone wrong.
  assert.deepEqual(problems.filter((p) => !p.includes('net::ERR_ABORTED')), []);
});

test('a model named by the address is added only once confirmed, and never in place of a built-in one', async () => {
  // No service worker, so that the route below answers the page's own fetch.
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, serviceWorkers: 'block' });
  const page = await context.newPage();
  const shadow = `?manifest=/fixtures/shadow-sd-turbo.toml&base=${encodeURIComponent(`${APP_URL}fixtures/tiny-sd/`)}`;
  await context.route('**/fixtures/shadow-sd-turbo.toml', (route) => route.fulfill({
    contentType: 'text/plain',
    body: readFileSync(path.join(FIXTURES, 'tiny-sd.toml'), 'utf8').replace('id = "tiny-sd"', 'id = "sd-turbo"'),
  }));
  await page.goto(APP_URL + QUERY + '&' + shadow.slice(1));
  await page.waitForSelector('#manifest-confirm');
  assert.match(await page.textContent('#generate-error'), /names "sd-turbo", the id of a built-in model; it was not added/);
  const asked = await page.textContent('#manifest-confirm');
  assert.match(asked, /Tiny SD \(tests\) \(tiny-sd\)/);
  assert.ok(asked.includes(`${APP_URL}fixtures/tiny-sd/`), asked);
  assert.doesNotMatch(asked, /sd-turbo/, 'a built-in id is not offered');
  assert.equal(await page.$('[data-model="tiny-sd"]'), null, 'nothing is added before the user confirms');
  await page.screenshot({ path: path.join(ARTIFACTS, 'app-confirm-models.png'), fullPage: true });
  await page.click('#manifest-confirm button.ignore');
  assert.equal(await page.$('#manifest-confirm'), null);
  assert.equal(await page.$('[data-model="tiny-sd"]'), null, 'ignored: not added');
  // The built-in SD-Turbo is still the one listed, with the Hub as its source.
  await page.click('#tab-models');
  assert.match(await page.textContent('[data-model="sd-turbo"]'), /SD-Turbo/);
  await page.reload();
  await page.click('#manifest-confirm button.add');
  await page.waitForSelector('[data-model="tiny-sd"]', { state: 'attached' });
  // Remembered: the next visit adds it without asking.
  await page.reload();
  await page.waitForSelector('[data-model="tiny-sd"]', { state: 'attached' });
  assert.equal(await page.$('#manifest-confirm'), null);
  await context.close();
});
