// Finishing in the app. Drafts, then finals: a batch made as drafts (TAESD's decode, each PNG carrying its
// final latents), one reviewed, kept and finished by keyboard (D) — the finished image equals the
// native CLI's direct generation with the same settings, its parameters no longer say Draft —
// and the other left a draft. Kept drafts are finished from a brief's board too, whose images are
// then scored on the device (CLIP score and aesthetic, against the CLI's `darkroom score`); a
// gallery image upscaled by a downloaded upscaler as `darkroom upscale` upscales it; the hires fix
// in the form, with a latent upscaler and with the upscaler model, as `darkroom generate --hires`.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  launch, openPage, downloaded, ARTIFACTS, cli, pixels, maxDiff, pngText, setField, fixtureModel, downloadModel, generateImages,
} from './harness.mjs';

const QUERY = `?${fixtureModel('tiny-sd')}&${fixtureModel('taesd-test')}`
  + `&${fixtureModel('clip-test', 'clip-score/model')}&${fixtureModel('aesthetic-test', 'clip-score')}`
  + `&${fixtureModel('upscaler-test', 'upscale')}&${fixtureModel('clip-vision-test', 'clip-score/model')}`;
const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLIP = path.join(ROOT, 'tests', 'fixtures', 'clip-score');
const PROMPT = 'a paper boat on a pond, morning light';
const SETTINGS = ['--sampler', 'euler', '--steps', '3', '--cfg', '7', '--width', '64', '--height', '48'];

let browser;
let session;

before(async () => {
  browser = await launch();
  session = await openPage(browser, { query: QUERY });
});
after(async () => { await browser?.close(); });

/// The PNG bytes behind a gallery item's download link.
function galleryPng(page, seed) {
  return downloaded(page, `.gallery-item a.download[download="darkroom-${seed}.png"]`);
}

function hasLatents(png) {
  for (let at = 8; at + 8 <= png.length;) {
    const len = png.readUInt32BE(at);
    if (png.toString('latin1', at + 4, at + 8) === 'drLT') return true;
    at += 12 + len;
  }
  return false;
}

test('a batch of drafts, one kept and finished by keyboard, equals the direct image', async () => {
  const { page, problems } = session;
  await page.waitForSelector('[data-model="tiny-sd"]', { state: 'attached' });
  await downloadModel(page, 'tiny-sd');
  await downloadModel(page, 'taesd-test');

  await page.click('#tab-generate');
  await page.selectOption('#model', 'tiny-sd');
  await page.fill('#prompt', PROMPT);
  await page.selectOption('#sampler', 'euler');
  await setField(page, '#steps', 3);
  await setField(page, '#cfg', 7);
  await setField(page, '#seed', 4321);
  await setField(page, '#width', 64);
  await setField(page, '#height', 48);
  await setField(page, '#batch-size', 2);
  await page.check('#drafts');
  await generateImages(page, 2);
  assert.equal(await page.$('#generate-error'), null);

  await page.click('#tab-gallery');
  await page.waitForFunction(() => document.querySelectorAll('.gallery-item .badge.draft').length === 2);
  const draft = await galleryPng(page, 4321);
  assert.ok(hasLatents(draft), 'a draft PNG carries its latents');
  assert.match(pngText(draft).parameters, /Draft: TAESD/);
  const direct = cli(['--prompt', PROMPT, ...SETTINGS, '--seed', '4321']);
  const want = await pixels(page, { png: direct });
  const before = await pixels(page, { png: draft });
  assert.ok(maxDiff(before, want) > 8, 'a draft shows TAESD\'s pixels, not the VAE\'s');

  // Review it at full size, keep it (K) and finish it (D).
  await page.click('.gallery-item:has(a.download[download="darkroom-4321.png"]) button.thumb');
  await page.waitForSelector('#review .badge.draft');
  await page.screenshot({ path: path.join(ARTIFACTS, 'drafts-review.png'), fullPage: true });
  await page.keyboard.press('k');
  await page.keyboard.press('d');
  await page.waitForFunction(() => /Finished 1 draft/.test(document.querySelector('#review-finish-status')?.textContent ?? ''),
    null, { timeout: 120_000 });
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => document.querySelectorAll('.gallery-item .badge.draft').length === 1);

  const finished = await galleryPng(page, 4321);
  assert.ok(!hasLatents(finished), 'a finished image carries no latents');
  const text = pngText(finished).parameters;
  assert.doesNotMatch(text, /Draft/);
  assert.match(text, /Steps: 3, Sampler: Euler, CFG scale: 7, Seed: 4321, Size: 64x48/);
  const worst = maxDiff(await pixels(page, { png: finished }), want);
  assert.ok(worst <= 2, `finished draft vs the CLI's direct image: worst pixel differs by ${worst}/255`);
  // Its verdict survived the finish.
  assert.equal(await page.getAttribute('.gallery-item:has(a.download[download="darkroom-4321.png"])', 'data-verdict'), 'kept');
  assert.deepEqual(problems, []);
});

test('a brief board finishes its kept drafts', async () => {
  const { page, problems } = session;
  await page.click('#tab-briefs');
  await page.click('#brief-new');
  await page.fill('#brief-title', 'Boats');
  await page.click('#brief-save');
  await page.waitForSelector('#brief-saved');
  await page.click('#tab-generate');
  await setField(page, '#seed', 99);
  await setField(page, '#batch-size', 2);
  await generateImages(page, 2);
  await page.click('#active-brief button.link');
  await page.waitForFunction(() => document.querySelectorAll('#board .cull-card .badge.draft').length === 2);
  assert.equal(await page.$('#finish-kept'), null, 'nothing kept yet');
  await page.click('#board .cull-card button.thumb');
  await page.waitForSelector('#review');
  await page.keyboard.press('k');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#finish-kept');
  assert.match(await page.textContent('#finish-kept'), /Finish 1 kept draft/);
  await page.click('#finish-kept');
  await page.waitForFunction(() => /Finished 1 draft/.test(document.querySelector('#board-notice')?.textContent ?? ''),
    null, { timeout: 120_000 });
  await page.waitForFunction(() => document.querySelectorAll('#board .cull-card .badge.draft').length === 1);
  await page.waitForSelector('#finish-kept', { state: 'detached' });
  await page.screenshot({ path: path.join(ARTIFACTS, 'drafts-board.png'), fullPage: true });
  assert.deepEqual(problems, []);
});

/// Every gallery record as [infotext, scores, png] (read-only: the page may read the stores).
async function records(page) {
  return page.evaluate(() => new Promise((resolve, reject) => {
    const open = indexedDB.open('darkroom-gallery');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const get = open.result.transaction('images', 'readonly').objectStore('images').getAll();
      get.onsuccess = () => resolve(get.result.map((r) => [r.infotext, r.scores, Array.from(r.png)]));
      get.onerror = () => reject(get.error);
    };
  }));
}

test('a board scores its images with CLIP and the aesthetic head, as darkroom score does', async () => {
  const { page, problems } = session;
  assert.match(await page.getAttribute('#score-clip', 'title'), /Download/, 'no CLIP model yet');
  assert.ok(await page.isDisabled('#score-clip'));
  await downloadModel(page, 'clip-test');
  await downloadModel(page, 'aesthetic-test');
  await page.click('#tab-briefs');
  await page.waitForSelector('#score-clip:not([disabled])');
  assert.match(await page.textContent('#score-clip'), /Score 2 with CLIP/);
  await page.click('#score-clip');
  await page.waitForFunction(() => /Scored 2 images/.test(document.querySelector('#board-notice')?.textContent ?? ''),
    null, { timeout: 120_000 });
  await page.waitForSelector('#score-clip', { state: 'detached' });
  await page.screenshot({ path: path.join(ARTIFACTS, 'scores-board.png'), fullPage: true });

  const dir = mkdtempSync(path.join(tmpdir(), 'darkroom-scores-'));
  const scored = (await records(page)).filter(([, scores]) => scores && JSON.parse(scores).clip_score !== undefined);
  assert.equal(scored.length, 2);
  for (const [k, [infotext, scores, png]] of scored.entries()) {
    const file = path.join(dir, `${k}.png`);
    writeFileSync(file, Buffer.from(png));
    const prompt = infotext.split('\n')[0];
    const run = spawnSync(path.join(ROOT, 'target', 'debug', 'darkroom'), [
      'score', '--prompt', prompt, '--clip', path.join(CLIP, 'model'), '--aesthetic', path.join(CLIP, 'aesthetic-head.pth'), file,
    ], { encoding: 'utf8', env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR || '/tmp' } });
    assert.equal(run.status, 0, run.stderr);
    const want = JSON.parse(run.stdout);
    const got = JSON.parse(scores);
    assert.ok(Math.abs(got.clip_score - want.clip_score) <= 0.05, `CLIP score ${got.clip_score} vs the CLI's ${want.clip_score}`);
    assert.ok(Math.abs(got.aesthetic - want.aesthetic) <= 1e-3, `aesthetic ${got.aesthetic} vs the CLI's ${want.aesthetic}`);
  }
  // The review shows them.
  await page.click('#board .cull-card button.thumb');
  await page.waitForSelector('#review [data-score="clip_score"]');
  await page.waitForSelector('#review [data-score="aesthetic"]');
  await page.keyboard.press('Escape');
  assert.deepEqual(problems, []);
});

/// A safetensors file's tensors: name → its bytes (the header read as the format says).
function tensors(bytes) {
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.toString('utf8', 8, 8 + n));
  delete header.__metadata__;
  return new Map(Object.entries(header).map(([name, t]) => [name,
    { dtype: t.dtype, shape: t.shape.join('x'), bytes: bytes.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]) }]));
}

test('the vision tower alone downloads by range: its tensors stored byte for byte, nothing of the text tower', async () => {
  const { page, problems } = session;
  await downloadModel(page, 'clip-vision-test');
  await page.waitForSelector('[data-model="clip-vision-test"] details.integrity td', { state: 'attached' });
  const rows = await page.$$eval('[data-model="clip-vision-test"] details.integrity tr', (trs) => trs.map((tr) => Array.from(tr.cells, (c) => c.textContent)));
  const row = rows.find((r) => r[0] === 'model.safetensors');
  assert.ok(row, JSON.stringify(rows));
  const whole = readFileSync(path.join(CLIP, 'model', 'model.safetensors'));
  assert.ok(Number(row[1]) < whole.length * 0.9, `${row[1]} of ${whole.length} bytes stored`);
  // The CLI's download of the same manifest is the same file; read with a parser of our own
  // here, it holds exactly the vision tower's tensors of the original, byte for byte.
  const cache = mkdtempSync(path.join(tmpdir(), 'darkroom-subset-'));
  const fetched = spawnSync(path.join(ROOT, 'target', 'debug', 'darkroom'), [
    'models', 'fetch', 'clip-vision-test', '--manifest', path.join(ROOT, 'tests', 'fixtures', 'clip-vision-test.toml'),
    '--base-url', `${new URL('/fixtures/clip-score/model/', page.url())}`, '--cache', cache, '--accept-license', '--quiet',
  ], { encoding: 'utf8' });
  assert.equal(fetched.status, 0, fetched.stderr);
  const stored = readFileSync(path.join(cache, 'clip-vision-test', 'model.safetensors'));
  assert.equal(stored.length, Number(row[1]));
  assert.equal(createHash('sha256').update(stored).digest('hex'), row[2], 'the app and the CLI store the same file');
  const original = tensors(whole);
  const kept = tensors(stored);
  const want = [...original.keys()].filter((k) => k.startsWith('vision_model.') || k.startsWith('visual_projection.'));
  assert.deepEqual([...kept.keys()].sort(), want.sort());
  for (const [name, t] of kept) {
    const o = original.get(name);
    assert.ok(t.dtype === o.dtype && t.shape === o.shape && t.bytes.equals(o.bytes), name);
  }
  assert.deepEqual(problems, []);
});

test('a gallery image upscaled by a downloaded upscaler equals darkroom upscale', async () => {
  const { page, problems } = session;
  await page.click('#tab-gallery');
  // Without an upscaler the action says what to download.
  await page.click('.gallery-item:has(a.download[download="darkroom-4321.png"]) button.upscale');
  await page.waitForFunction(() => /needs an upscaler/.test(document.querySelector('#upscale-status')?.textContent ?? ''));
  await downloadModel(page, 'upscaler-test');
  await page.click('#tab-gallery');
  await page.waitForSelector('#upscaler');
  // The gallery is read when its tab opens (the list is set whole, once read).
  await page.waitForSelector('.gallery-item');
  const before = await page.locator('.gallery-item').count();
  const source = await galleryPng(page, 4321);
  await page.click('.gallery-item:has(a.download[download="darkroom-4321.png"]) button.upscale');
  await page.waitForFunction(() => /Upscaled to 128×96/.test(document.querySelector('#upscale-status')?.textContent ?? ''),
    null, { timeout: 120_000 });
  await page.waitForFunction((n) => document.querySelectorAll('.gallery-item').length === n + 1, before);
  await page.screenshot({ path: path.join(ARTIFACTS, 'upscaled-gallery.png'), fullPage: true });
  const [file] = await Promise.all([
    page.waitForEvent('download'),
    page.click('.gallery-item:first-child a.download'),
  ]);
  const upscaled = readFileSync(await file.path());
  const text = pngText(upscaled).parameters;
  assert.match(text, /Seed: 4321/);
  assert.match(text, /Postprocess upscale by: 2, Postprocess upscaler: upscaler-test$/);

  const dir = mkdtempSync(path.join(tmpdir(), 'darkroom-upscale-'));
  const input = path.join(dir, 'in.png');
  const output = path.join(dir, 'out.png');
  writeFileSync(input, source);
  const run = spawnSync(path.join(ROOT, 'target', 'debug', 'darkroom'), [
    'upscale', '--model', path.join(ROOT, 'tests', 'fixtures', 'upscale', 'compact_x2.safetensors'),
    '--in', input, '--out', output, '--precision', 'f32', '--quiet',
  ], { encoding: 'utf8', env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR || '/tmp' } });
  assert.equal(run.status, 0, run.stderr);
  const worst = maxDiff(await pixels(page, { png: upscaled }), await pixels(page, { png: readFileSync(output) }));
  assert.ok(worst <= 2, `app vs darkroom upscale: worst pixel differs by ${worst}/255`);
  assert.deepEqual(problems, []);
});

test('the hires fix in the form makes what darkroom generate --hires makes', async () => {
  const { page, problems } = session;
  await page.click('#tab-generate');
  await page.uncheck('#drafts');
  await page.fill('#prompt', 'a lighthouse on a cliff at dusk');
  await setField(page, '#seed', 21);
  await setField(page, '#steps', 4);
  await setField(page, '#batch-size', 1);
  await page.check('#hires');
  await setField(page, '#hires-scale', 2);
  await setField(page, '#hires-steps', 5);
  await setField(page, '#hires-strength', 0.6);
  await page.selectOption('#hires-upscaler', 'Latent');
  assert.match(await page.textContent('#hires-size'), /128×96/);
  await generateImages(page, 1);
  assert.equal(await page.$('#generate-error'), null);
  await page.screenshot({ path: path.join(ARTIFACTS, 'hires-generated.png'), fullPage: true });
  const ours = await pixels(page, { selector: '#results figure img' });
  assert.deepEqual([ours.width, ours.height], [128, 96]);
  const theirs = await pixels(page, {
    png: cli(['--prompt', 'a lighthouse on a cliff at dusk', '--sampler', 'euler', '--cfg', '7', '--width', '64',
      '--height', '48', '--seed', '21', '--steps', '4', '--hires', '2,steps=5,strength=0.6,upscaler=latent']),
  });
  const worst = maxDiff(ours, theirs);
  assert.ok(worst <= 2, `the app's hires fix vs the CLI's: worst pixel differs by ${worst}/255`);

  // With the downloaded upscaler model (a 2x compact network) instead.
  await page.selectOption('#hires-upscaler', 'upscaler-test');
  await setField(page, '#hires-scale', 1.5);
  await generateImages(page, 1);
  assert.equal(await page.$('#generate-error'), null);
  const byModel = await pixels(page, { selector: '#results figure img' });
  assert.deepEqual([byModel.width, byModel.height], [96, 72]);
  const model = path.join(ROOT, 'tests', 'fixtures', 'upscale', 'compact_x2.safetensors');
  const cliByModel = await pixels(page, {
    png: cli(['--prompt', 'a lighthouse on a cliff at dusk', '--sampler', 'euler', '--cfg', '7', '--width', '64',
      '--height', '48', '--seed', '21', '--steps', '4', '--hires', `1.5,steps=5,strength=0.6,upscaler=${model}`]),
  });
  const worstByModel = maxDiff(byModel, cliByModel);
  assert.ok(worstByModel <= 2, `hires with an upscaler model vs the CLI's: worst pixel differs by ${worstByModel}/255`);
  await page.uncheck('#hires');
  assert.deepEqual(problems, []);
});
