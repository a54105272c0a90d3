// Dynamic prompts, wildcards and styles in the app. Wildcard files and an A1111 styles.csv (with
// its quirks: a byte-order mark, quoted commas) imported under Prompts; a template expanded in
// combinatorial mode with a style applied makes one image per combination, each carrying the
// expanded, styled prompt and the template, seeds continuing — and equal to the CLI's plain
// generation of that prompt and seed; random mode queues one job per image; a wildcard without
// values is refused with what to do; styles export as A1111 writes them. A brand preset file
// imported and picked sets the form and makes the image `darkroom generate --preset` makes. An
// X/Y/Z plot made from the form is the grid `darkroom grid` makes with the same axes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { writeFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import {
  session, downloaded, ARTIFACTS, cli, cliCommand, pixels, maxDiff, pngText, setField, fixtureModel, downloadModel, generateImages,
} from './harness.mjs';

const TEMPLATE = 'a {red|blue} __animals/pets__';
const STYLES = '\ufeffname,prompt,negative_prompt\r\n'
  + 'Ink,"{prompt}, ink drawing, high contrast","blurry, lowres"\r\n'
  + 'Poster,"flat colours, bold shapes",\r\n';

const shared = session(`?${fixtureModel('tiny-sd')}`);

/// The PNG bytes behind a result's download link.
const resultPng = (page, seed) => downloaded(page, `#results a.download[download="darkroom-${seed}.png"]`);

test('wildcards and styles imported, a template expanded into styled images', async () => {
  const { page, problems } = shared;
  await page.waitForSelector('[data-model="tiny-sd"]', { state: 'attached' });
  await downloadModel(page, 'tiny-sd');

  await page.click('#tab-prompts');
  await page.setInputFiles('#wildcard-files', [
    { name: 'pets.txt', mimeType: 'text/plain', buffer: Buffer.from('cat\n# not a value\n\nowl\n') },
    { name: 'notes.md', mimeType: 'text/markdown', buffer: Buffer.from('not a wildcard') },
  ]);
  await page.waitForSelector('#wildcard-status.ok');
  assert.match(await page.textContent('#wildcard-status'), /Imported 1 wildcard file: __pets__ \(1 other file skipped\)/);
  // The same file again under a folder's name: as a folder pick names it.
  await page.evaluate(() => {
    const input = document.querySelector('#wildcard-files');
    const file = new File(['owl\ncat\n'], 'pets.txt', { type: 'text/plain' });
    Object.defineProperty(file, 'webkitRelativePath', { value: 'mine/animals/pets.txt' });
    const list = new DataTransfer();
    list.items.add(file);
    input.files = list.files;
    input.dispatchEvent(new Event('change', { bubbles: true }));
  });
  await page.waitForSelector('#wildcard-list tr[data-wildcard="animals/pets"]');
  assert.equal(await page.textContent('#wildcard-list tr[data-wildcard="animals/pets"] td:nth-child(2)'), '2');
  // sd-dynamic-prompts' structured files: named lists, weights.
  await page.setInputFiles('#wildcard-files', {
    name: 'pack.yaml', mimeType: 'application/yaml', buffer: Buffer.from("animals:\n  wild: ['2::fox', wolf]\n"),
  });
  await page.waitForSelector('#wildcard-list tr[data-wildcard="pack.yaml"]');
  assert.equal(await page.textContent('#wildcard-list tr[data-wildcard="pack.yaml"] td:nth-child(1)'), '__animals/wild__');
  assert.equal(await page.textContent('#wildcard-list tr[data-wildcard="pack.yaml"] td:nth-child(3)'), 'fox, wolf');
  await page.setInputFiles('#wildcard-files', { name: 'broken.json', mimeType: 'application/json', buffer: Buffer.from('{') });
  await page.waitForSelector('#wildcard-status.error');
  assert.match(await page.textContent('#wildcard-status'), /broken\.json: EOF/);

  await page.setInputFiles('#styles-file', { name: 'styles.csv', mimeType: 'text/csv', buffer: Buffer.from(STYLES) });
  await page.waitForSelector('#style-list tr[data-style="Poster"]');
  assert.match(await page.textContent('#style-status'), /Imported 2 styles/);
  assert.equal(await page.textContent('#style-list tr[data-style="Ink"] td:nth-child(2)'), '{prompt}, ink drawing, high contrast');
  await page.screenshot({ path: path.join(ARTIFACTS, 'prompts-tab.png'), fullPage: true });

  await page.click('#tab-generate');
  await page.selectOption('#model', 'tiny-sd');
  await page.fill('#prompt', TEMPLATE);
  await page.fill('#negative', '');
  await page.selectOption('#sampler', 'euler');
  await setField(page, '#steps', 2);
  await setField(page, '#cfg', 7);
  await setField(page, '#seed', 11);
  await setField(page, '#width', 64);
  await setField(page, '#height', 48);
  await page.selectOption('#dynamic', 'combinatorial');
  await page.waitForSelector('#dynamic-preview');
  assert.match(await page.textContent('#dynamic-preview'), /^4 prompts — “?a red cat/);
  await page.click('#style-chips [data-style="Ink"]');
  assert.equal(await page.getAttribute('#style-chips [data-style="Ink"]', 'aria-pressed'), 'true');
  await page.screenshot({ path: path.join(ARTIFACTS, 'prompts-form.png'), fullPage: true });
  await generateImages(page, 4);
  assert.equal(await page.$('#generate-error'), null);

  const want = ['a red cat', 'a red owl', 'a blue cat', 'a blue owl'];
  for (const [i, prompt] of want.entries()) {
    const text = pngText(await resultPng(page, 11 + i)).parameters;
    const styled = `${prompt}, ink drawing, high contrast`;
    assert.ok(text.startsWith(`${styled}\nNegative prompt: blurry, lowres\n`), text);
    assert.match(text, /, Template: a \{red\|blue\} __animals\/pets__$/);
    assert.match(text, new RegExp(`Seed: ${11 + i},`));
  }
  // An image equals the CLI's plain generation of its prompt and seed.
  const direct = cli(['--prompt', 'a blue owl, ink drawing, high contrast', '--negative', 'blurry, lowres',
    '--sampler', 'euler', '--steps', '2', '--cfg', '7', '--width', '64', '--height', '48', '--seed', '14']);
  const got = await pixels(page, { png: await resultPng(page, 14) });
  assert.ok(maxDiff(got, await pixels(page, { png: direct })) <= 2, 'the app matches the CLI');
  assert.deepEqual(problems, []);
});

test('random mode queues one job per image; a wildcard without values is refused', async () => {
  const { page, problems } = shared;
  await page.click('#style-chips [data-style="Ink"]');
  await page.selectOption('#dynamic', 'random');
  await setField(page, '#batch-count', 3);
  await page.click('#queue-button');
  await page.waitForFunction(() => document.querySelectorAll('.queue-job').length === 3);
  const prompts = await page.$$eval('.queue-job', (jobs) => jobs.map((j) => j.textContent));
  for (const p of prompts) assert.match(p, /a (red|blue) (cat|owl)/);
  await page.waitForFunction(() => [...document.querySelectorAll('.queue-job')].every((j) => j.dataset.state === 'done'),
    null, { timeout: 240_000 });

  await page.fill('#prompt', 'a __nothing__ in the fog');
  await page.waitForSelector('#dynamic-preview.error');
  assert.match(await page.textContent('#dynamic-preview'), /__nothing__ has no values: import nothing\.txt under Prompts/);
  await page.keyboard.press('Control+Enter');
  await page.waitForSelector('#generate-error');
  assert.match(await page.textContent('#generate-error'), /wildcard __nothing__, which has no values here/);
  assert.deepEqual(problems, []);
});

test('styles save from the prompt and export as A1111 writes them; a wildcard deletes', async () => {
  const { page, problems } = shared;
  await page.fill('#prompt', 'studio portrait, "soft" light');
  await page.fill('#negative', 'grain');
  await page.click('#tab-prompts');
  await page.fill('#style-name', 'Studio, soft');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#style-list tr[data-style="Studio, soft"]');
  assert.equal((await downloaded(page, '#styles-export')).toString('utf8'), 'name,prompt,negative_prompt\r\n'
    + 'Ink,"{prompt}, ink drawing, high contrast","blurry, lowres"\r\n'
    + 'Poster,"flat colours, bold shapes",\r\n'
    + '"Studio, soft","studio portrait, ""soft"" light",grain\r\n');
  await page.click('#wildcard-list tr[data-wildcard="pets"] button.danger');
  await page.waitForFunction(() => !document.querySelector('#wildcard-list tr[data-wildcard="pets"]'));
  // Kept across a reload.
  await page.reload();
  await page.click('#tab-prompts');
  await page.waitForSelector('#wildcard-list tr[data-wildcard="animals/pets"]');
  await page.waitForSelector('#style-list tr[data-style="Studio, soft"]');
  assert.deepEqual(problems, []);
});

const PRESET = {
  name: 'Acme', prompt: '{prompt}, flat pastel', negative_prompt: 'neon', sampler: 'Euler a', steps: 2,
  cfg_scale: 5, sizes: ['32x48', '48x32'], palette: ['#0b1f3a', '#d94f30'], seed: { fixed: 77 },
};

test('a brand preset sets the form and makes the image the CLI makes under it', async () => {
  const { page, problems } = shared;
  await page.click('#tab-prompts');
  const json = JSON.stringify(PRESET);
  await page.setInputFiles('#preset-file', { name: 'acme.json', mimeType: 'application/json', buffer: Buffer.from(json) });
  await page.waitForSelector('#preset-list tr[data-preset="Acme"]');
  assert.match(await page.textContent('#preset-list tr[data-preset="Acme"]'), /Euler a · 2 steps · CFG 5 · sizes 32x48, 48x32 · seed 77/);
  await page.setInputFiles('#preset-file', { name: 'bad.json', mimeType: 'application/json', buffer: Buffer.from('{"name":"x","sizes":["big"]}') });
  await page.waitForSelector('#preset-status.error');
  assert.match(await page.textContent('#preset-status'), /bad\.json: the preset sizes: "big" is not WxH/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'prompts-presets.png'), fullPage: true });

  await page.click('#tab-generate');
  await page.selectOption('#dynamic', 'off');
  await setField(page, '#batch-count', 1);
  await page.fill('#prompt', 'a boat');
  await page.fill('#negative', '');
  await page.selectOption('#preset', 'Acme');
  assert.equal(await page.inputValue('#steps'), '2');
  assert.equal(await page.inputValue('#sampler'), 'euler_a');
  assert.deepEqual([await page.inputValue('#width'), await page.inputValue('#height')], ['32', '48']);
  await generateImages(page, 1);
  assert.equal(await page.$('#generate-error'), null);
  const png = await resultPng(page, 77);
  assert.equal(pngText(png).parameters, 'a boat, flat pastel\nNegative prompt: neon\n'
    + 'Steps: 2, Sampler: Euler a, CFG scale: 5, Seed: 77, Size: 32x48, Model: tiny-sd, Preset: Acme');
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'darkroom-preset-')), 'acme.json');
  writeFileSync(file, json);
  const direct = cli(['--prompt', 'a boat', '--preset', file]);
  assert.ok(maxDiff(await pixels(page, { png }), await pixels(page, { png: direct })) <= 2, 'the app matches the CLI');
  await page.selectOption('#preset', '');
  assert.deepEqual(problems, []);
});

test('an X/Y/Z plot from the form is the grid darkroom grid makes', async () => {
  const { page, problems } = shared;
  await page.fill('#prompt', 'a cat at dusk');
  await page.fill('#negative', '');
  await page.selectOption('#sampler', 'euler');
  await setField(page, '#cfg', 7);
  await setField(page, '#seed', 21);
  await setField(page, '#width', 32);
  await setField(page, '#height', 32);
  await page.click('#xyz summary');
  await page.selectOption('#x-type', 'steps');
  await page.fill('#x-values', '1-3');
  await page.selectOption('#y-type', 'prompt');
  await page.fill('#y-values', 'cat, owl');
  assert.equal(await page.textContent('#grid-plan'), '6 cells (3 × 2), one image each.');
  await page.fill('#y-values', 'dog, owl');
  await page.click('#grid-button');
  await page.waitForSelector('#generate-error');
  assert.match(await page.textContent('#generate-error'), /its first value "dog" is what is searched/);
  await page.fill('#y-values', 'cat, owl');
  await page.click('#grid-button');
  await page.waitForSelector('#grid-image', { timeout: 240_000 });
  await page.waitForFunction(() => !document.querySelector('#run'));
  assert.equal(await page.$$eval('#results figure img', (l) => l.length), 6);
  await page.screenshot({ path: path.join(ARTIFACTS, 'grid-app.png'), fullPage: true });
  const png = await downloaded(page, '#grid-result a.download');
  assert.match(pngText(png).parameters,
    /Script: X\/Y\/Z plot, X Type: Steps, X Values: 1-3, Y Type: Prompt S\/R, Y Values: "cat, owl"$/);

  const out = mkdtempSync(path.join(tmpdir(), 'darkroom-grid-'));
  cliCommand('grid', ['--x', 'steps:1-3', '--y', 'prompt:cat, owl', '--prompt', 'a cat at dusk', '--sampler', 'euler',
    '--cfg', '7', '--seed', '21', '--width', '32', '--height', '32', '--out', out]);
  const want = await pixels(page, { png: readFileSync(path.join(out, 'grid.png')) });
  assert.ok(maxDiff(await pixels(page, { png }), want) <= 2, "the app's grid is the CLI's");
  assert.deepEqual(problems, []);
});
