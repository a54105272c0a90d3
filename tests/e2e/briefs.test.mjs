// Briefs in the app: a brief made and made active, two runs of the tiny model generated under it
// (each an iteration, scored with the brief's palette), culled by keyboard at full size (stars,
// two rejected with reasons, one kept, one final), still so after a reload; the brief file and the
// case study exported — the page opens offline and shows the rejected directions, and the CLI
// makes a case study of the same file — and the file imported into a fresh profile gives the same
// board.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { launch, openPage, ARTIFACTS, setField, fixtureModel } from './harness.mjs';

const QUERY = `?${fixtureModel('tiny-sd')}`;
const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

let browser;
let session;

before(async () => {
  browser = await launch();
  session = await openPage(browser, { query: QUERY });
});
after(async () => { await browser?.close(); });

/// Generates with the form's settings and waits for the run to end.
async function generate(page, images) {
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction((n) => document.querySelectorAll('#results figure img').length === n
    && !document.querySelector('#run'), images, { timeout: 240_000 });
}

/// The board's cards as [verdict, stars, reason].
async function board(page) {
  return page.$$eval('#board .cull-card', (cards) => cards.map((c) => [
    c.dataset.verdict,
    c.querySelector('.stars')?.textContent ?? '',
    c.querySelector('.reason')?.textContent ?? '',
  ]));
}

let briefFile;
let caseStudy;

test('a brief collects two runs as iterations, culled by keyboard, kept across a reload', async () => {
  const { page, problems } = session;
  await page.waitForSelector('[data-model="tiny-sd"]', { state: 'attached' });
  await page.click('#tab-models');
  await page.click('[data-model="tiny-sd"] button.download');
  await page.waitForSelector('[data-model="tiny-sd"] .license');
  await page.click('[data-model="tiny-sd"] .license button.primary');
  await page.waitForSelector('[data-model="tiny-sd"][data-state="complete"]', { timeout: 120_000 });

  await page.click('#tab-briefs');
  await page.click('#brief-new');
  await page.waitForSelector('#brief-title');
  await page.fill('#brief-title', 'Harbour at dusk');
  await page.fill('#brief-text', 'Three key visuals for the autumn campaign. Warm, quiet, no people.');
  await page.fill('#brief-palette', '#0b1f3a, #f2efe9, #d94f30');
  await page.fill('#brief-aspects', '16:9, 1:1');
  await page.click('#brief-save');
  await page.waitForSelector('#brief-saved');
  assert.match(await page.textContent('#brief-activate'), /join this brief ✓/);
  // A colour that does not parse is refused by name.
  await page.fill('#brief-palette', '#0b1f3a, teal');
  await page.click('#brief-save');
  await page.waitForSelector('.brief-editor [role="alert"]');
  assert.match(await page.textContent('.brief-editor [role="alert"]'), /teal is not a colour/);
  await page.fill('#brief-palette', '#0b1f3a, #f2efe9, #d94f30');
  await page.click('#brief-save');

  await page.click('#tab-generate');
  assert.match(await page.textContent('#active-brief'), /Harbour at dusk/);
  await setField(page, '#steps', 2);
  await setField(page, '#width', 64);
  await setField(page, '#height', 64);
  await setField(page, '#batch-size', 3);
  await page.fill('#prompt', 'a harbour at dusk, warm light');
  await generate(page, 3);
  await setField(page, '#batch-size', 2);
  await page.fill('#prompt', 'a harbour at night, lanterns');
  await generate(page, 2);

  await page.click('#tab-briefs');
  await page.waitForFunction(() => document.querySelectorAll('#board .cull-card').length === 5);
  const iterations = await page.$$eval('#board .iteration', (s) => s.map((e) => [
    e.querySelector('.iteration-name').value, e.querySelectorAll('.cull-card').length]));
  assert.deepEqual(iterations, [['Iteration 1', 3], ['Iteration 2', 2]]);
  assert.match(await page.textContent('#board .iteration .prompt'), /warm light/);

  // Review at full size: 4 stars and rejected with a reason; then the next rejected; kept; final.
  await page.click('#board .cull-card .thumb');
  await page.waitForSelector('#review');
  assert.match(await page.textContent('#review-position'), /1 of 5/);
  assert.match(await page.textContent('#review'), /Palette ΔE/);
  await page.keyboard.press('4');
  await page.keyboard.press('x');
  await page.keyboard.type('too dark');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#review[data-verdict="rejected"]');
  assert.equal(await page.textContent('#review-stars'), '★★★★☆');
  await page.keyboard.press('ArrowRight');
  await page.waitForFunction(() => /2 of 5/.test(document.querySelector('#review-position').textContent));
  await page.keyboard.press('x');
  await page.keyboard.type('off palette');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#review[data-verdict="rejected"]');
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('k');
  await page.keyboard.press('5');
  await page.waitForSelector('#review[data-verdict="kept"]');
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('f');
  await page.waitForSelector('#review[data-verdict="final"]');
  await page.screenshot({ path: path.join(ARTIFACTS, 'briefs-review.png') });
  await page.keyboard.press('Escape');
  await page.waitForSelector('#review', { state: 'detached' });

  const want = [
    ['rejected', '★★★★☆', 'too dark'],
    ['rejected', '', 'off palette'],
    ['kept', '★★★★★', ''],
    ['final', '', ''],
    ['undecided', '', ''],
  ];
  assert.deepEqual(await board(page), want);
  await page.screenshot({ path: path.join(ARTIFACTS, 'briefs-board.png'), fullPage: true });

  // Filters and sorting by a score.
  await page.selectOption('#board-filter', 'rejected');
  assert.equal((await board(page)).length, 2);
  await page.selectOption('#board-filter', 'all');
  await page.selectOption('#board-sort', 'palette_delta_e');
  assert.equal((await board(page)).length, 5);
  await page.selectOption('#board-sort', 'iteration');

  await page.reload();
  await page.click('#tab-briefs');
  await page.waitForFunction(() => document.querySelectorAll('#board .cull-card').length === 5);
  assert.deepEqual(await board(page), want, 'the verdicts survive a reload');

  // The exports.
  const [zip] = await Promise.all([page.waitForEvent('download'), page.click('#export-brief')]);
  assert.equal(zip.suggestedFilename(), 'harbour-at-dusk.darkroom-brief.zip');
  briefFile = path.join(ARTIFACTS, 'harbour-at-dusk.darkroom-brief.zip');
  copyFileSync(await zip.path(), briefFile);
  const [html] = await Promise.all([page.waitForEvent('download'), page.click('#export-case-study')]);
  caseStudy = path.join(ARTIFACTS, 'briefs-case-study.html');
  copyFileSync(await html.path(), caseStudy);
  const [sheet] = await Promise.all([page.waitForEvent('download'), page.click('#export-sheet')]);
  copyFileSync(await sheet.path(), path.join(ARTIFACTS, 'briefs-contact-sheet.png'));
  assert.deepEqual(problems, []);
});

test('the case study opens offline and shows the rejected directions; the CLI reads the same file', async () => {
  const context = await browser.newContext({ offline: true, viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  const failed = [];
  page.on('requestfailed', (r) => failed.push(r.url()));
  await page.goto(`file://${caseStudy}`);
  assert.equal(await page.textContent('h1'), 'Harbour at dusk');
  const rejected = await page.textContent('#rejected');
  assert.match(rejected, /too dark/);
  assert.match(rejected, /off palette/);
  assert.equal(await page.$$eval('#finals figure', (f) => f.length), 1);
  const broken = await page.$$eval('img', (imgs) => imgs.filter((i) => !(i.complete && i.naturalWidth > 0)).length);
  assert.equal(broken, 0, 'every image is inside the page');
  assert.deepEqual(failed, []);
  await page.screenshot({ path: path.join(ARTIFACTS, 'briefs-case-study.png'), fullPage: true });
  await context.close();

  if (!process.env.DARKROOM_CLI_BUILT) {
    assert.equal(spawnSync('cargo', ['build', '--quiet', '-p', 'darkroom-cli'], { cwd: ROOT, stdio: 'inherit' }).status, 0);
  }
  const out = path.join(ARTIFACTS, 'briefs-cli-case-study.html');
  const sheet = path.join(ARTIFACTS, 'briefs-cli-sheet.png');
  const run = spawnSync(path.join(ROOT, 'target', 'debug', 'darkroom'),
    ['brief', 'export', briefFile, '--html', out, '--sheet', sheet], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  assert.match(readFileSync(out, 'utf8'), /Rejected: too dark/);
  const shown = spawnSync(path.join(ROOT, 'target', 'debug', 'darkroom'), ['brief', 'show', briefFile], { encoding: 'utf8' });
  assert.match(shown.stdout, /rejected 4\/5: too dark/);
});

test('the brief file imported into a fresh profile gives the same board', async () => {
  const fresh = await openPage(browser, { query: QUERY });
  const { page, problems } = fresh;
  await page.click('#tab-briefs');
  await page.setInputFiles('#brief-import', briefFile);
  await page.waitForSelector('#brief-message.ok >> text=/Imported the brief with 5 images/');
  await page.waitForFunction(() => document.querySelectorAll('#board .cull-card').length === 5);
  assert.equal(await page.inputValue('#brief-title'), 'Harbour at dusk');
  assert.equal(await page.inputValue('#brief-palette'), '#0b1f3a, #f2efe9, #d94f30');
  const iterations = await page.$$eval('#board .iteration', (s) => s.map((e) => e.querySelectorAll('.cull-card').length));
  assert.deepEqual(iterations, [3, 2]);
  assert.deepEqual(await board(page), [
    ['rejected', '★★★★☆', 'too dark'],
    ['rejected', '', 'off palette'],
    ['kept', '★★★★★', ''],
    ['final', '', ''],
    ['undecided', '', ''],
  ]);
  // The gallery has them too, marked.
  await page.click('#tab-gallery');
  await page.waitForFunction(() => document.querySelectorAll('#gallery .gallery-item[data-verdict="rejected"]').length === 2);
  assert.deepEqual(problems, []);
  await fresh.context.close();
});
