// Recovery from what breaks a long session: the GPU device lost in the middle of a generation
// (destroyed, as a driver reset or the browser reclaiming the GPU would) and the worker itself
// crashing (a panic in the wasm). Each time the run ends with an error that says what happened,
// and the next generation on the same page works.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, APP_URL, ARTIFACTS, setField, fixtureModel, confirmAddedModels, downloadModel, generateImages } from './harness.mjs';

const QUERY = `?${fixtureModel('tiny-sd')}`;

// Put in front of www/worker.js: keeps the devices the wasm opens, and destroys the newest one
// right after the next queue submission once the test says 'destroy' (over a BroadcastChannel,
// which reaches the worker without going through the app); after 'slow', every upload to the
// GPU takes 25 ms more, so that loading a model takes seconds; 'count' asks how many uploads
// there were (the answer comes on 'darkroom-test-count').
const DESTROYER = `
const darkroomTestDevices = [];
let darkroomTestSlow = false;
let darkroomTestWrites = 0;
const writeBuffer = GPUQueue.prototype.writeBuffer;
GPUQueue.prototype.writeBuffer = function (...args) {
  darkroomTestWrites += 1;
  if (darkroomTestSlow) { const until = performance.now() + 25; while (performance.now() < until); }
  return writeBuffer.apply(this, args);
};
const requestDevice = GPUAdapter.prototype.requestDevice;
GPUAdapter.prototype.requestDevice = async function (...args) {
  const device = await requestDevice.apply(this, args);
  darkroomTestDevices.push(device);
  return device;
};
let darkroomTestArmed = false;
new BroadcastChannel('darkroom-test').onmessage = (event) => {
  if (event.data === 'slow') darkroomTestSlow = true;
  if (event.data === 'fast') darkroomTestSlow = false;
  if (event.data === 'destroy') darkroomTestArmed = true;
  if (event.data === 'count') new BroadcastChannel('darkroom-test-count').postMessage(darkroomTestWrites);
};
const submit = GPUQueue.prototype.submit;
GPUQueue.prototype.submit = function (...args) {
  const result = submit.apply(this, args);
  if (darkroomTestArmed) {
    darkroomTestArmed = false;
    darkroomTestDevices.at(-1).destroy();
  }
  return result;
};
`;

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/// The app (`dev`: the developer build, which can be told to crash its worker) with the tiny
/// model downloaded and the form set for a run of many small steps.
async function open(dev, { patchWorker = false } = {}) {
  // No service worker: the worker script must come from the network, where the route is.
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, serviceWorkers: 'block' });
  if (patchWorker) {
    await context.route(/\/worker\.js$/, async (route) => {
      const response = await route.fetch();
      const body = DESTROYER + (await response.text());
      await route.fulfill({ response, body, headers: { ...response.headers(), 'content-length': String(Buffer.byteLength(body)) } });
    });
  }
  const page = await context.newPage();
  const query = QUERY;
  await page.goto(APP_URL + (dev ? 'dev/' : '') + query);
  await confirmAddedModels(page, query);
  await page.waitForSelector('[data-model="tiny-sd"]', { state: 'attached' });
  await downloadModel(page, 'tiny-sd');
  await page.click('#tab-generate');
  await page.selectOption('#sampler', 'euler');
  await setField(page, '#steps', 30);
  await setField(page, '#width', 64);
  await setField(page, '#height', 64);
  await page.fill('#prompt', 'a lighthouse at dusk');
  return { context, page };
}

/// Starts a generation and waits until it is denoising.
async function startAndWaitForSteps(page) {
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction(() => /\d+\/\d+/.test(document.querySelector('#run-status')?.textContent ?? ''), null, { timeout: 240_000 });
}

async function runEnded(page) {
  await page.waitForFunction(() => !document.querySelector('#run'), null, { timeout: 240_000 });
}

test('a GPU device destroyed mid-generation ends that run with a GPU error, and the next run works', async () => {
  const { context, page } = await open(false, { patchWorker: true });
  try {
    await startAndWaitForSteps(page);
    await page.evaluate(() => new BroadcastChannel('darkroom-test').postMessage('destroy'));
    await runEnded(page);
    const error = await page.textContent('#generate-error');
    assert.match(error, /GPU/, error);
    assert.equal(await page.locator('#results figure img').count(), 0, 'a run on a lost device made no image');
    await page.screenshot({ path: path.join(ARTIFACTS, 'resilience-device-lost.png'), fullPage: true });

    await setField(page, '#steps', 4);
    await generateImages(page, 1);
    assert.equal(await page.$('#generate-error'), null);
  } finally {
    await context.close();
  }
});

test('a crash of the worker mid-generation is reported, a new worker starts, and the next run works', async () => {
  const { context, page } = await open(true);
  try {
    await startAndWaitForSteps(page);
    await page.evaluate(() => window.darkroomCrashWorker());
    await runEnded(page);
    const error = await page.textContent('#generate-error');
    assert.match(error, /stopped/, error);
    assert.match(error, /crash asked for/, error);
    await page.screenshot({ path: path.join(ARTIFACTS, 'resilience-crash.png'), fullPage: true });

    await setField(page, '#steps', 4);
    await generateImages(page, 1);
    assert.equal(await page.$('#generate-error'), null);
    // The new worker follows the queue as the old one did.
    await page.fill('#prompt', 'a queued lighthouse');
    await page.click('#queue-button');
    await page.waitForSelector('.queue-job[data-state="done"]', { timeout: 240_000 });
  } finally {
    await context.close();
  }
});

/// How many uploads to the GPU the worker made so far.
function uploads(page) {
  return page.evaluate(() => new Promise((resolve) => {
    const answers = new BroadcastChannel('darkroom-test-count');
    answers.onmessage = (event) => { answers.close(); resolve(event.data); };
    new BroadcastChannel('darkroom-test').postMessage('count');
  }));
}

test('Cancel while a model loads stops the load, not only the steps after it', async () => {
  const { context, page } = await open(false, { patchWorker: true });
  try {
    await page.evaluate(() => new BroadcastChannel('darkroom-test').postMessage('slow'));
    await setField(page, '#steps', 2);
    await page.keyboard.press('Control+Enter');
    await page.waitForFunction(() => /Loading/.test(document.querySelector('#run-status')?.textContent ?? ''), null, { timeout: 60_000 });
    await page.click('#cancel-button');
    await runEnded(page);
    // A cancel is not an error.
    assert.equal(await page.$('#generate-error'), null, await page.textContent('#generate-error').catch(() => ''));
    assert.equal(await page.locator('#results figure img').count(), 0);
    await page.waitForTimeout(500);
    const cancelled = await uploads(page);

    // The next run loads the whole model (the cancelled load kept nothing) and works.
    await page.keyboard.press('Control+Enter');
    await page.waitForFunction(() => /\d+\/\d+/.test(document.querySelector('#run-status')?.textContent ?? ''), null, { timeout: 240_000 });
    const whole = (await uploads(page)) - cancelled;
    assert.ok(cancelled < 0.8 * whole, `the cancelled load uploaded ${cancelled} times, a whole one ${whole}`);
    await page.evaluate(() => new BroadcastChannel('darkroom-test').postMessage('fast'));
    await runEnded(page);
    assert.equal(await page.$('#generate-error'), null);
    assert.equal(await page.locator('#results figure img').count(), 1);
  } finally {
    await context.close();
  }
});
