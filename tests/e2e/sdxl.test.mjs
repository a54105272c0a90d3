// SDXL in the app: the tiny SDXL (tests/fixtures/tiny-sdxl.toml, two text encoders, added
// conditioning) downloaded from the local test server, then generated with a fixed seed, CFG and
// an empty negative prompt (zeros, as the model's force_zeros_for_empty_prompt says) and with a
// written negative prompt; each image equals the native CLI's for the same parameters. A control
// unit with a tiny SDXL ControlNet (tests/fixtures/tiny-sdxl-controlnet.toml) generates the CLI's
// pixels. An SDXL textual-inversion embedding imported in the Models tab applies where the prompt
// names it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { launch, openPage, ARTIFACTS, cli, pixels, maxDiff, pngText, setField, fixtureModel, downloadModel } from './harness.mjs';

const QUERY = `?${fixtureModel('tiny-sdxl')}&${fixtureModel('tiny-sdxl-controlnet', 'sdxl-controlnet/tiny-sdxl-controlnet-a')}`;
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

test('an SDXL control unit lists only SDXL ControlNets and generates the CLI\'s pixels', async () => {
  const { page, problems } = session;
  await downloadModel(page, 'tiny-sdxl-controlnet');
  await page.click('#tab-generate');
  assert.equal(await page.inputValue('#model'), 'tiny-sdxl');
  assert.match(await page.textContent('#controls-note'), /SDXL ControlNets/);
  await page.click('#add-control');
  const unit = page.locator('.control-unit').first();
  assert.equal(await unit.locator('.control-model').inputValue(), 'tiny-sdxl-controlnet', 'the downloaded SDXL ControlNet is picked');
  const offered = await unit.locator('.control-model option').evaluateAll((options) => options.map((o) => o.value));
  assert.ok(offered.includes('control-canny-sdxl') && !offered.includes('control-canny'), `offered: ${offered}`);
  const image = path.join(FIXTURES, 'controlnet', 'control_lines.png');
  await unit.locator('.control-file').setInputFiles(image);
  await unit.locator('.control-pre').selectOption('none');
  await setField(page, '.control-unit .control-weight', 0.8);
  const prompt = 'a glass teapot on a table';
  await page.fill('#prompt', prompt);
  await page.fill('#negative', '');
  await page.selectOption('#sampler', 'euler');
  await setField(page, '#steps', 3);
  await setField(page, '#cfg', 5);
  await setField(page, '#seed', 91);
  await setField(page, '#width', 64);
  await setField(page, '#height', 48);
  await generate(page);
  assert.equal(await page.$('#generate-error'), null, await page.textContent('#generate-error').catch(() => ''));
  await page.screenshot({ path: path.join(ARTIFACTS, 'sdxl-control-unit.png'), fullPage: true });
  const ours = await pixels(page, { selector: '#results figure img' });
  const net = path.join(FIXTURES, 'sdxl-controlnet', 'tiny-sdxl-controlnet-a');
  const args = ['--prompt', prompt, '--negative', '', '--sampler', 'euler', '--steps', '3', '--cfg', '5',
    '--seed', '91', '--width', '64', '--height', '48'];
  const theirs = await pixels(page, {
    png: cli([...args, '--control', `model=${net},image=${image},weight=0.8`], { model: 'tiny-sdxl' }),
  });
  const worst = maxDiff(ours, theirs);
  assert.ok(worst <= 2, `SDXL ControlNet, browser vs CLI: worst pixel differs by ${worst}/255`);
  const plain = await pixels(page, { png: cli(args, { model: 'tiny-sdxl' }) });
  assert.ok(maxDiff(ours, plain) > 8, 'the control unit changes the image');
  await page.click('.control-unit .control-remove');
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
