// The queue as a user meets it: five jobs added from the Generate form, the page reloaded after
// the first is done while the next runs, and the queue carrying on by itself: five images in the gallery at the end,
// one per job, none made twice (a run's images and its "done" are written in one transaction).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, openPage, ARTIFACTS, setField, fixtureModel } from './harness.mjs';

const QUERY = `?${fixtureModel('tiny-sd')}`;

let browser;
let session;

before(async () => {
  browser = await launch();
  session = await openPage(browser, { query: QUERY });
});
after(async () => { await browser?.close(); });

const states = (page) => page.$$eval('.queue-job', (jobs) => jobs.map((j) => j.dataset.state));

test('five queued jobs survive a reload mid-queue and make five images, none twice', async () => {
  const { page, problems } = session;
  await page.waitForSelector('[data-model="tiny-sd"]', { state: 'attached' });
  await page.click('#tab-models');
  await page.click('[data-model="tiny-sd"] button.download');
  await page.click('[data-model="tiny-sd"] .license button.primary');
  await page.waitForSelector('[data-model="tiny-sd"][data-state="complete"]', { timeout: 120_000 });

  await page.click('#tab-generate');
  await page.selectOption('#sampler', 'euler');
  await setField(page, '#steps', 4);
  await setField(page, '#seed', 7);
  await setField(page, '#width', 64);
  await setField(page, '#height', 64);
  for (let i = 1; i <= 5; i++) {
    await page.fill('#prompt', `queued job ${i}`);
    if (i === 5) {
      await page.keyboard.press('Control+Shift+Enter');
    } else {
      await page.click('#queue-button');
    }
    await page.waitForFunction((n) => document.querySelectorAll('.queue-job').length === n, i);
  }
  assert.equal(await page.$('#generate-error'), null);
  // The first is done and none after it yet (a job takes seconds here): reload now, while the
  // second runs.
  await page.waitForFunction(() => {
    const s = [...document.querySelectorAll('.queue-job')].map((j) => j.dataset.state);
    return s[0] === 'done' && s.slice(1).every((x) => x !== 'done');
  }, null, { timeout: 240_000 });
  assert.match(await page.textContent('#queue-summary'), /of 5 done/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'queue-running.png'), fullPage: true });
  const before = await states(page);
  assert.ok(before.filter((s) => s === 'done').length < 5, `reloaded mid-queue: ${before}`);
  await page.reload();

  // The new page finds the queue as it was and the worker carries on with it.
  await page.waitForSelector('.queue-job', { timeout: 60_000 });
  await page.waitForFunction(() => {
    const s = [...document.querySelectorAll('.queue-job')].map((j) => j.dataset.state);
    return s.length === 5 && s.every((x) => x === 'done');
  }, null, { timeout: 300_000 });
  assert.match(await page.textContent('#queue-summary'), /5 of 5 done/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'queue-done.png'), fullPage: true });

  // Exactly one image per job in the gallery.
  await page.click('#tab-gallery');
  await page.waitForFunction(() => document.querySelectorAll('#gallery .gallery-item').length >= 5, null, { timeout: 30_000 });
  const prompts = await page.$$eval('#gallery .gallery-item .prompt', (els) => els.map((e) => e.textContent).sort());
  assert.deepEqual(prompts, ['queued job 1', 'queued job 2', 'queued job 3', 'queued job 4', 'queued job 5']);

  // Clear finished empties the list; the images stay.
  await page.click('#tab-generate');
  await page.click('#queue-clear');
  await page.waitForSelector('#queue', { state: 'detached' });
  // The gallery is read when its tab opens (the list is set whole, once read).
  await page.click('#tab-gallery');
  await page.waitForSelector('#gallery .gallery-item');
  assert.equal(await page.locator('#gallery .gallery-item').count(), 5);
  // A reload aborts the old page's requests in flight; nothing else may have gone wrong.
  assert.deepEqual(problems.filter((p) => !p.includes('net::ERR_ABORTED')), []);
});

test('waiting jobs can be moved and cancelled, and a paused queue waits until resumed', async () => {
  const { page } = session;
  await page.click('#tab-generate');
  await page.fill('#prompt', 'first');
  await page.click('#queue-button');
  await page.waitForSelector('#queue-pause');
  await page.click('#queue-pause');
  await page.waitForFunction(() => /paused/.test(document.querySelector('#queue-summary').textContent));
  for (const name of ['second', 'third']) {
    await page.fill('#prompt', name);
    await page.click('#queue-button');
  }
  await page.waitForFunction(() => document.querySelectorAll('.queue-job').length === 3);
  const order = () => page.$$eval('.queue-job .prompt', (els) => els.map((e) => e.textContent));
  assert.deepEqual(await order(), ['first', 'second', 'third']);
  // "third" runs before "second".
  await page.click('.queue-job:nth-child(3) .queue-up');
  await page.waitForFunction(() => document.querySelector('.queue-job:nth-child(2) .prompt')?.textContent === 'third');
  assert.deepEqual(await order(), ['first', 'third', 'second']);
  await page.click('.queue-job:nth-child(3) .queue-cancel');
  await page.waitForSelector('.queue-job:nth-child(3)[data-state="cancelled"]');
  await page.screenshot({ path: path.join(ARTIFACTS, 'queue-paused.png'), fullPage: true });
  // Paused: "third" waits (the first may have started before the pause, and finishes).
  await page.waitForTimeout(1500);
  assert.equal((await states(page))[1], 'waiting');
  await page.click('#queue-pause');
  await page.waitForFunction(() => {
    const s = [...document.querySelectorAll('.queue-job')].map((j) => j.dataset.state);
    return s[0] === 'done' && s[1] === 'done';
  }, null, { timeout: 240_000 });
  assert.deepEqual(await states(page), ['done', 'done', 'cancelled']);
  await page.click('#tab-gallery');
  await page.waitForFunction(() => document.querySelectorAll('#gallery .gallery-item').length === 7, null, { timeout: 30_000 });
});
