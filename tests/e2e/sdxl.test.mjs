// SDXL in the app: the tiny SDXL (tests/fixtures/tiny-sdxl.toml, two text encoders, added
// conditioning) downloaded from the local test server, then generated with a fixed seed, CFG and
// an empty negative prompt (zeros, as the model's force_zeros_for_empty_prompt says) and with a
// written negative prompt; each image equals the native CLI's for the same parameters. An SDXL
// textual-inversion embedding imported in the Models tab applies where the prompt names it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { launch, openPage, ARTIFACTS, cli, pixels, maxDiff, pngText, setField, fixtureModel } from './harness.mjs';

const QUERY = `?${fixtureModel('tiny-sdxl')}`;
const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

let browser;
let session;

before(async () => {
  browser = await launch();
  session = await openPage(browser, { query: QUERY });
});
after(async () => { await browser?.close(); });

/// Generates with the form's settings and waits for a new image (the results show the last run).
async function generate(page) {
  const before = await page.$eval('#results figure img', (img) => img.src).catch(() => null);
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction((old) => {
    const img = document.querySelector('#results figure img');
    return img && img.src !== old && img.complete && !document.querySelector('#run');
  }, before, { timeout: 240_000 });
}

test('the tiny SDXL downloads, and generates the CLI\'s pixels with empty and written negatives', async () => {
  const { page, problems } = session;
  await page.waitForSelector('[data-model="tiny-sdxl"]', { state: 'attached' });
  await page.click('#tab-models');
  await page.click('[data-model="tiny-sdxl"] button.download');
  await page.waitForSelector('[data-model="tiny-sdxl"] .license');
  await page.click('[data-model="tiny-sdxl"] .license button.primary');
  await page.waitForSelector('[data-model="tiny-sdxl"][data-state="complete"]', { timeout: 120_000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'sdxl-models.png'), fullPage: true });

  await page.click('#tab-generate');
  assert.equal(await page.inputValue('#model'), 'tiny-sdxl');
  // The ControlNets are SD 1.x's: no unit can be added for an SDXL model, and the form says why.
  assert.equal(await page.isDisabled('#add-control'), true);
  assert.match(await page.textContent('#controls-note'), /SD 1\.x models so far/);
  const prompt = 'a red fox in fresh snow, (golden hour:1.2)';
  for (const [i, negative] of ['', 'blurry, lowres'].entries()) {
    await page.fill('#prompt', prompt);
    await page.fill('#negative', negative);
    await page.selectOption('#sampler', 'dpmpp_2m');
    await setField(page, '#steps', 3);
    await setField(page, '#cfg', 6);
    await setField(page, '#seed', 77 + i);
    await setField(page, '#width', 64);
    await setField(page, '#height', 48);
    await generate(page);
    assert.equal(await page.$('#generate-error'), null, await page.textContent('#generate-error').catch(() => ''));
    const ours = await pixels(page, { selector: '#results figure img' });
    const theirs = await pixels(page, {
      png: cli(['--prompt', prompt, '--negative', negative, '--sampler', 'dpmpp_2m', '--steps', '3', '--cfg', '6',
        '--seed', String(77 + i), '--width', '64', '--height', '48'], { model: 'tiny-sdxl' }),
    });
    const worst = maxDiff(ours, theirs);
    assert.ok(worst <= 2, `negative ${JSON.stringify(negative)}: browser vs CLI differ by ${worst}/255`);
  }
  await page.screenshot({ path: path.join(ARTIFACTS, 'sdxl-generated.png'), fullPage: true });
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#results a.download')]);
  const text = pngText(readFileSync(await download.path())).parameters;
  assert.match(text, /Model: tiny-sdxl/);
  assert.deepEqual(problems, []);
});

test('an SDXL embedding imported in the Models tab applies where the prompt names it, as the CLI applies it', async () => {
  const { page, problems } = session;
  await page.click('#tab-models');
  await page.setInputFiles('#embedding-file', path.join(FIXTURES, 'embeddings', 'xlstyle.safetensors'));
  assert.equal(await page.inputValue('#embedding-name'), 'xlstyle');
  await page.click('#embedding-import');
  await page.waitForSelector('#embedding-result.ok');
  assert.match(await page.textContent('#embedding-result'), /SDXL, 2 vectors/);
  await page.waitForSelector('[data-embedding="xlstyle"]');
  await page.screenshot({ path: path.join(ARTIFACTS, 'sdxl-embeddings.png'), fullPage: true });
  // "Add to prompt" puts the word in the prompt and shows the Generate tab.
  await page.click('#tab-generate');
  await page.fill('#prompt', 'a red fox in fresh snow');
  await page.click('#tab-models');
  await page.click('[data-embedding="xlstyle"] button.add-embedding');
  assert.equal(await page.inputValue('#prompt'), 'a red fox in fresh snow, xlstyle');
  await page.fill('#negative', '');
  await page.selectOption('#sampler', 'euler');
  await setField(page, '#steps', 2);
  await setField(page, '#cfg', 5);
  await setField(page, '#seed', 9);
  await generate(page);
  assert.equal(await page.$('#generate-error'), null, await page.textContent('#generate-error').catch(() => ''));
  const ours = await pixels(page, { selector: '#results figure img' });
  const theirs = await pixels(page, {
    png: cli(['--prompt', 'a red fox in fresh snow, xlstyle', '--negative', '', '--sampler', 'euler', '--steps', '2',
      '--cfg', '5', '--seed', '9', '--width', '64', '--height', '48',
      '--embedding-dir', path.join(FIXTURES, 'embeddings')], { model: 'tiny-sdxl' }),
  });
  const worst = maxDiff(ours, theirs);
  assert.ok(worst <= 2, `browser vs CLI with the embedding: differ by ${worst}/255`);
  assert.deepEqual(problems, []);
});
