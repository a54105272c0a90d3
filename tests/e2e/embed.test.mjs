// Darkroom embedded in other sites' pages through www/embed.js: the host pages live on origins
// of their own (http://localhost on three ports, answered by the test itself; loopback, so
// Chromium's private-network rules let them load from 127.0.0.1) and Darkroom on the test
// server's 127.0.0.1 origin, so every message crosses origins as it would in production. The user allows one host, denies another; a third origin's
// messages and malformed ones from the host change nothing; the allowed host receives the
// image the user inserts, with the CLI's pixels and the parameters; no request carries a prompt.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { launch, launchPersistent, confirmAddedModels, ARTIFACTS, APP_URL, cli, pixels, maxDiff, pngText, tinyLdmCheckpoint } from './harness.mjs';

const HOST = 'http://localhost:8931';
const OTHER = 'http://localhost:8932';
const EVIL = 'http://localhost:8933';
// The localhost origins are one site (ports do not count), so they share the widget's storage;
// this one is another site, where nothing is downloaded.
const SITE2 = 'http://127.0.0.2:8934';
const COVERED = 'http://localhost:8937';
// Another origin of Darkroom's own site (127.0.0.1): its frames share Darkroom's storage.
const SAME_SITE = 'http://127.0.0.1:8936';
const DARKROOM = new URL(APP_URL).origin;
const FIXTURE = `manifest=/fixtures/tiny-sd.toml&base=${encodeURIComponent(`${APP_URL}fixtures/tiny-sd/`)}`;
// The developer build's widget: it still takes a model from its address, which lets these tests
// give a widget on partitioned storage (where no model was ever added) the tiny model. The
// product's widget ignores `?manifest=` (the last test).
const WIDGET = `${APP_URL}dev/?${FIXTURE}`;
const PROMPT = 'a red boat on a calm lake';

const hostPage = `<!doctype html><html><head><meta charset="utf-8"><title>A design tool</title></head>
<body style="font-family: sans-serif; background: #f4f4f4">
<h1 style="font-size: 18px">Moodboard</h1>
<div id="slot" style="width: 360px; height: 640px"></div>
<script src="${APP_URL}embed.js"></script>
<script>
  window.replies = [];
  addEventListener('message', (e) => { if (e.origin === '${DARKROOM}') replies.push(e.data); });
</script>
</body></html>`;

// Posts a generate request into every frame of its parent: the Darkroom widget is one of them.
const evilPage = `<!doctype html><script>
  for (let i = 0; i < parent.frames.length; i++) {
    try { parent.frames[i].postMessage({ darkroom: 1, type: 'generate', id: 99, params: { prompt: 'steal' } }, '*'); } catch {}
  }
  document.title = 'posted';
</script>`;

let browser;
let context;
const requests = [];

// The host pages are answered by the test, so Chromium cannot tell they are on this machine and
// would refuse them the loopback server ("local network access"); a real host and Darkroom
// are both on the public internet, where that rule does not apply.
const NO_LOCAL_NETWORK_CHECKS = ['--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests'];

before(async () => {
  browser = await launch({ extraArgs: NO_LOCAL_NETWORK_CHECKS });
  context = await browser.newContext({ viewport: { width: 900, height: 800 } });
  context.on('request', (r) => requests.push({ url: r.url(), body: r.postData() ?? '' }));
  for (const origin of [HOST, OTHER, SITE2, SAME_SITE, COVERED]) {
    await context.route(`${origin}/**`, (route) => route.fulfill({ contentType: 'text/html', body: hostPage }));
  }
  await context.route(`${EVIL}/**`, (route) => route.fulfill({ contentType: 'text/html', body: evilPage }));
});
after(async () => { await browser?.close(); });

async function mount(page, model = 'tiny-sd') {
  await page.evaluate(async ({ base, model }) => {
    window.progress = 0;
    window.dr = await Darkroom.mount(document.querySelector('#slot'), { base, model });
    dr.addEventListener('progress', () => { window.progress += 1; });
  }, { base: WIDGET, model });
  return page.frameLocator('#slot iframe');
}

/// Starts dr.generate in the host page; the outcome lands in window.job.
async function startGenerate(page, params) {
  await page.evaluate((p) => {
    window.job = dr.generate(p).then(
      async (r) => ({ png: Array.from(new Uint8Array(await r.png.arrayBuffer())), parameters: r.parameters }),
      (e) => ({ name: e.name, code: e.code, message: e.message }));
  }, params);
}

let hostTab;

test('a host page mounts the widget, the user allows it, and the host receives the inserted image', async () => {
  const page = await context.newPage();
  hostTab = page;
  await page.goto(`${HOST}/`);
  const frame = await mount(page);
  // The widget's storage is this site's own: it asks for its own download, saying why.
  await frame.locator('#embed-model').waitFor();
  assert.match(await frame.locator('#embed-model').textContent(), /this site's storage/);
  // This profile blocks third-party storage, so using Darkroom's own copy is offered, not taken.
  await frame.locator('#embed-storage-access').waitFor();

  const params = { prompt: PROMPT, seed: 21, steps: 2, sampler: 'euler', cfg: 7.5, width: 64, height: 48 };
  await startGenerate(page, params);
  await frame.locator('#embed-consent').waitFor();
  assert.match(await frame.locator('#embed-consent').textContent(), /http:\/\/localhost:8931/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'embed-consent.png') });
  // The widget takes a click only once it has been visible a moment.
  await page.waitForTimeout(600);
  await frame.locator('#embed-allow').click();
  // The model is not downloaded: the request waits for the user, and the host is not told.
  await frame.locator('#embed-needs').waitFor();
  await page.waitForTimeout(1000);
  assert.equal(await page.evaluate(() => Promise.race([window.job, new Promise((r) => setTimeout(() => r('waiting'), 100))])),
    'waiting', 'the host learnt that the model is missing');
  assert.deepEqual(await page.evaluate(() => replies.filter((m) => m.type !== 'ready').map((m) => m.type)), []);
  await page.screenshot({ path: path.join(ARTIFACTS, 'embed-needs.png') });
  await frame.locator('#embed-download').click();
  await frame.locator('#embed-model').waitFor({ state: 'detached', timeout: 120_000 });
  await frame.locator('#embed-insert').waitFor({ timeout: 240_000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'embed-result.png') });
  await frame.locator('#embed-insert').click();
  const result = await page.evaluate(() => window.job);
  assert.ok(result.png, JSON.stringify(result));
  assert.ok(await page.evaluate(() => window.progress) > 0, 'the host saw progress events');

  // What the widget makes goes to the host only: no gallery keeps it behind the user's back.
  const widgetFrame = page.frames().find((f) => f.url().includes('/embed.html?'));
  const kept = await widgetFrame.evaluate(async () => {
    if (!(await indexedDB.databases()).some((d) => d.name === 'darkroom-gallery')) return 0;
    return new Promise((resolve, reject) => {
      const open = indexedDB.open('darkroom-gallery');
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const db = open.result;
        if (!db.objectStoreNames.contains('images')) { db.close(); resolve(0); return; }
        const count = db.transaction('images').objectStore('images').count();
        count.onsuccess = () => { db.close(); resolve(count.result); };
        count.onerror = () => reject(count.error);
      };
    });
  });
  assert.equal(kept, 0, 'the widget kept its image in a gallery');

  const png = Buffer.from(result.png);
  assert.equal(pngText(png).parameters, result.parameters, 'the PNG carries the parameters it was sent with');
  for (const part of [PROMPT, 'Steps: 2', 'Sampler: Euler', 'Seed: 21', 'Size: 64x48', 'Model: tiny-sd']) {
    assert.ok(result.parameters.includes(part), `${part} in ${result.parameters}`);
  }
  const ours = await pixels(page, { png });
  const theirs = await pixels(page, {
    png: cli(['--prompt', PROMPT, '--sampler', 'euler', '--steps', '2', '--cfg', '7.5', '--seed', '21',
      '--width', '64', '--height', '48']),
  });
  const worst = maxDiff(ours, theirs);
  assert.ok(worst <= 2, `widget vs CLI: worst pixel ${worst}/255`);
});

test('a denied origin gets a typed refusal, asked once', async () => {
  const page = await context.newPage();
  await page.goto(`${OTHER}/`);
  const frame = await mount(page);
  await startGenerate(page, { prompt: 'a cat' });
  await frame.locator('#embed-consent').waitFor();
  await frame.locator('#embed-deny').click();
  assert.deepEqual(await page.evaluate(() => window.job.then((r) => [r.name, r.code])), ['DarkroomError', 'denied']);
  await startGenerate(page, { prompt: 'a cat' });
  assert.equal(await page.evaluate(() => window.job.then((r) => r.code)), 'denied');
  assert.equal(await frame.locator('#embed-consent').count(), 0, 'the choice is remembered');
  await page.close();
});

test('when the browser refuses storage access, the widget says this site needs its own download, with the size', async () => {
  const page = await context.newPage();
  await page.goto(`${SITE2}/`);
  const cdp = await context.newCDPSession(page);
  const { targetInfo } = await cdp.send('Target.getTargetInfo');
  const browserCdp = await browser.newBrowserCDPSession();
  await browserCdp.send('Browser.setPermission', {
    permission: { name: 'storage-access' }, setting: 'denied', origin: SITE2, embeddedOrigin: DARKROOM,
    browserContextId: targetInfo.browserContextId,
  });
  const frame = await mount(page);
  await page.waitForTimeout(600);
  await frame.locator('#embed-storage-access').click();
  const refused = frame.locator('#embed-storage-refused');
  await refused.waitFor({ timeout: 10_000 });
  assert.match(await refused.textContent(), /did not let this page use Darkroom's own storage.*needs its own download of 9\.0 MB/);
  await page.close();
});

test('consent acts only while the widget is visibly on screen: faded or covered, a click does nothing', async () => {
  const page = await context.newPage();
  await page.goto(`${COVERED}/`);
  const frame = await mount(page);
  await startGenerate(page, { prompt: 'a cat' });
  await frame.locator('#embed-consent').waitFor();
  await page.waitForTimeout(700);
  // Faded by the host page.
  await page.evaluate(() => { document.querySelector('#slot iframe').style.opacity = '0.3'; });
  await page.waitForTimeout(400);
  await frame.locator('#embed-allow').dispatchEvent('click');
  await frame.locator('#embed-covered').waitFor();
  assert.equal(await frame.locator('#embed-consent').count(), 1, 'a faded widget took the click');
  await page.screenshot({ path: path.join(ARTIFACTS, 'embed-faded.png') });
  // Covered by a nearly transparent element of the host page (the click would land on it).
  await page.evaluate(() => {
    document.querySelector('#slot iframe').style.opacity = '1';
    const cover = document.createElement('div');
    cover.id = 'cover';
    cover.style.cssText = 'position:absolute;left:0;top:0;width:420px;height:720px;background:rgba(255,255,255,0.02)';
    document.body.append(cover);
  });
  await page.waitForTimeout(400);
  await frame.locator('#embed-allow').dispatchEvent('click');
  assert.equal(await frame.locator('#embed-consent').count(), 1, 'a covered widget took the click');
  // In plain sight again, a moment later: the click acts.
  await page.evaluate(() => document.querySelector('#cover').remove());
  await page.waitForTimeout(800);
  await frame.locator('#embed-allow').click();
  await frame.locator('#embed-consent').waitFor({ state: 'detached' });
  assert.equal(await frame.locator('#embed-covered').count(), 0);
  await page.close();
});

test('a host page without an origin (a data: page) is refused: the widget says why and acts for it on nothing', async () => {
  // A sandboxed page cannot run the widget at all (its frames inherit the sandbox); a data:
  // page has an opaque origin without one. Its requests (a hello, or a generate once the
  // widget's start-up "ready" reached it) must not be served.
  const page = await context.newPage();
  await page.goto(`${COVERED}/`);
  const inner = `<!doctype html><div id="slot" style="width:360px;height:640px"></div><script src="${APP_URL}embed.js"></script>
<script>Darkroom.mount(document.querySelector('#slot'), { base: '${WIDGET}', timeoutMs: 20000 })
  .then((widget) => { window.job = widget.generate({ prompt: 'a cat' }); });</script>`;
  await page.evaluate((src) => {
    const frame = document.createElement('iframe');
    frame.src = src;
    frame.style.cssText = 'width:400px;height:700px;border:0';
    document.body.append(frame);
  }, `data:text/html,${encodeURIComponent(inner)}`);
  let widget;
  for (let i = 0; i < 100 && !widget; i++) {
    widget = page.frames().find((f) => f.url().includes('/embed.html?'));
    if (!widget) await page.waitForTimeout(100);
  }
  assert.ok(widget, 'the widget frame was not created');
  await widget.waitForSelector('#embed-opaque', { timeout: 20_000 });
  assert.match(await widget.textContent('#embed-opaque'), /no origin of its own/);
  await page.waitForTimeout(1000);
  assert.equal(await widget.$('#embed-consent'), null, 'the widget asked consent for an opaque origin');
  assert.equal(await widget.$('#run'), null);
  await page.screenshot({ path: path.join(ARTIFACTS, 'embed-opaque.png') });
  await page.close();
});

test('a third origin\'s messages and malformed ones from the host change nothing', async () => {
  const page = hostTab;
  const frame = page.frameLocator('#slot iframe');
  await page.evaluate(() => new Promise((resolve) => {
    const evil = document.createElement('iframe');
    evil.src = 'http://localhost:8933/';
    evil.onload = resolve;
    document.body.append(evil);
  }));
  await page.waitForTimeout(500);
  const log = await page.frames().find((f) => f.url().startsWith(APP_URL)).evaluate(() => window.__darkroomEmbedLog ?? []);
  assert.ok(log.some((l) => l.includes('localhost:8933')), JSON.stringify(log));
  assert.equal(await frame.locator('#embed-consent').count(), 0);
  assert.equal(await frame.locator('#run, progress').count(), 0, 'nothing started');

  const replies = await page.evaluate(async (origin) => {
    replies.length = 0;
    const w = document.querySelector('#slot iframe').contentWindow;
    w.postMessage({ darkroom: 2, type: 'generate', id: 5, params: { prompt: 'x' } }, origin);
    w.postMessage('not an object', origin);
    w.postMessage(null, origin);
    w.postMessage({ darkroom: 1, type: 'generate', id: 6, params: { prompt: 42 } }, origin);
    w.postMessage({ darkroom: 1, type: 'generate', id: 7, params: { prompt: 'x'.repeat(5_000_000) } }, origin);
    w.postMessage({ darkroom: 1, type: 'generate', id: 8, params: { prompt: 'x', steps: 'many' } }, origin);
    w.postMessage({ darkroom: 1, type: 'generate', id: 9, params: { prompt: 'x', init: new ArrayBuffer(40 << 20) } }, origin);
    w.postMessage({ darkroom: 1, type: 'format-disk', id: 10 }, origin);
    // A LoRA tag: refused in the same words whatever the user has stored.
    w.postMessage({ darkroom: 1, type: 'generate', id: 11, params: { prompt: 'x <lora:my-face:1>' } }, origin);
    w.postMessage({ darkroom: 1, type: 'generate', id: 12, params: { prompt: 'x', controls: [{ model: '../../etc' }] } }, origin);
    await new Promise((r) => setTimeout(r, 1000));
    return replies.map((m) => [m.id, m.type, m.code, m.message]);
  }, DARKROOM);
  assert.deepEqual(replies.map((r) => r.slice(0, 3)), [[6, 'error', 'invalid'], [7, 'error', 'invalid'], [8, 'error', 'invalid'],
    [9, 'error', 'invalid'], [10, 'error', 'invalid'], [11, 'error', 'invalid'], [12, 'error', 'invalid']]);
  assert.match(replies[5][3], /<lora:…> tags are not taken from a host page/);

  // A ControlNet this browser lacks (or that does not exist) and a depth unit's model: the
  // request waits for the user, the host hears only the user's refusal.
  await page.evaluate(async () => {
    const canvas = new OffscreenCanvas(64, 48);
    canvas.getContext('2d').fillRect(16, 8, 32, 32);
    const image = await canvas.convertToBlob({ type: 'image/png' });
    window.job = dr.generate({ prompt: 'a boat', steps: 1, width: 64, height: 48,
      controls: [{ model: 'controlnet-nope', image, pre: 'depth' }] })
      .then(() => ({ code: 'none' }), (e) => ({ code: e.code, message: e.message }));
  });
  await frame.locator('#embed-needs').waitFor();
  assert.match(await frame.locator('#embed-needs').textContent(), /ControlNet “controlnet-nope”, which Darkroom does not know here/);
  // A depth unit needs the depth preprocessor's model too, offered for download.
  assert.match(await frame.locator('#embed-needs').textContent(), /The depth preprocessor's Depth Anything V2 Small \(99\.\d MB\), not downloaded yet/);
  assert.equal(await frame.locator('#embed-download-depth-anything-v2-small').count(), 1);
  await page.waitForTimeout(800);
  assert.equal(await page.evaluate(() => Promise.race([window.job, new Promise((r) => setTimeout(() => r('waiting'), 100))])), 'waiting');
  await frame.locator('#embed-refuse').click();
  assert.equal((await page.evaluate(() => window.job)).code, 'model');
  await frame.locator('#embed-needs').waitFor({ state: 'detached' });

  // And the widget still works.
  await startGenerate(page, { prompt: 'again', seed: 3, steps: 1, sampler: 'euler', width: 64, height: 48 });
  await frame.locator('#embed-insert').waitFor({ timeout: 240_000 });
  await frame.locator('#embed-insert').click();
  assert.ok((await page.evaluate(() => window.job)).png, 'a PNG after the malformed messages');
});

test('privacy: no request of the session carries a prompt', async () => {
  assert.ok(requests.some((r) => r.url.includes('/fixtures/tiny-sd/unet/')), 'the widget\'s download was recorded');
  for (const words of [PROMPT, 'a cat', 'steal']) {
    const leaked = requests.filter((r) => decodeURIComponent(r.url).includes(words) || r.body.includes(words));
    assert.deepEqual(leaked.map((r) => r.url), [], `"${words}" left the device`);
  }
  const elsewhere = requests.filter((r) => ![DARKROOM, HOST, OTHER, EVIL, SITE2, SAME_SITE, COVERED].includes(new URL(r.url).origin)
    && !r.url.startsWith('blob:') && !r.url.startsWith('data:'));
  assert.deepEqual(elsewhere.map((r) => r.url), []);
});

test('with storage access, the widget uses Darkroom\'s own storage: a checkpoint imported there, no second download', async () => {
  // Third-party cookies allowed, as in Chrome's default profile: the browser then grants the
  // Storage Access API's unpartitioned storage to the widget.
  const persistent = await launchPersistent({
    extraArgs: NO_LOCAL_NETWORK_CHECKS, preferences: { profile: { cookie_controls_mode: 0 } },
  });
  try {
    const seen = [];
    persistent.on('request', (r) => seen.push(r.url()));
    await persistent.route(`${HOST}/**`, (route) => route.fulfill({ contentType: 'text/html', body: hostPage }));
    // First, Darkroom's own page downloads the model.
    const own = await persistent.newPage();
    await own.goto(WIDGET);
    await confirmAddedModels(own, WIDGET);
    await own.click('#tab-models');
    await own.click('[data-model="tiny-sd"] button.download');
    await own.click('[data-model="tiny-sd"] .license button.primary');
    await own.waitForSelector('[data-model="tiny-sd"][data-state="complete"]', { timeout: 120_000 });
    // … and imports a checkpoint (the tiny model as one file) on tiny-sd's configs.
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'darkroom-embed-')), 'My Checkpoint.safetensors');
    writeFileSync(file, tinyLdmCheckpoint());
    await own.setInputFiles('#import-file', file);
    await own.click('#import-button');
    await own.waitForSelector('#import-result.ok', { timeout: 120_000 });
    await own.close();
    const downloaded = seen.length;

    const page = await persistent.newPage();
    await page.goto(`${HOST}/`);
    const frame = await mount(page, 'my-checkpoint');
    const using = frame.locator('#embed-first-party');
    // The browser allows it without asking here; where it wants a click, the widget offers one.
    await page.waitForTimeout(600);
    await Promise.race([using.waitFor({ timeout: 30_000 }),
      frame.locator('#embed-storage-access').click({ timeout: 30_000 })]);
    await using.waitFor({ timeout: 30_000 });
    await frame.locator('#embed-model').waitFor({ state: 'detached', timeout: 30_000 });
    await page.screenshot({ path: path.join(ARTIFACTS, 'embed-first-party.png') });

    const params = { prompt: PROMPT, seed: 21, steps: 2, sampler: 'euler', cfg: 7.5, width: 64, height: 48 };
    await startGenerate(page, params);
    await frame.locator('#embed-allow').click();
    await frame.locator('#embed-insert').waitFor({ timeout: 240_000 });
    await frame.locator('#embed-insert').click();
    const result = await page.evaluate(() => window.job);
    assert.ok(result.png, JSON.stringify(result));
    const worst = maxDiff(await pixels(page, { png: Buffer.from(result.png) }), await pixels(page, {
      png: cli(['--prompt', PROMPT, '--sampler', 'euler', '--steps', '2', '--cfg', '7.5', '--seed', '21',
        '--width', '64', '--height', '48']),
    }));
    assert.ok(worst <= 2, `widget on Darkroom's own storage vs CLI: worst pixel ${worst}/255`);
    assert.ok(result.parameters.includes('Model: my-checkpoint'), result.parameters);
    const again = seen.slice(downloaded).filter((u) => u.includes('/fixtures/tiny-sd/') && !u.endsWith('.toml'));
    assert.deepEqual(again, [], 'no weights downloaded again inside the widget');
  } finally {
    await persistent.close();
  }
});

test('the product widget takes no model from its address; one added on Darkroom\'s own page, it offers', async () => {
  const mountProduct = async (page) => {
    await page.evaluate(async (base) => {
      window.dr = await Darkroom.mount(document.querySelector('#slot'), { base, model: 'tiny-sd' });
    }, `${APP_URL}?${FIXTURE}`);
    const frame = page.frameLocator('#slot iframe');
    await frame.locator('#embed-model').waitFor();
    return frame;
  };
  // A host writing a manifest into the widget's address adds nothing: the widget offers a
  // built-in model instead.
  const page = await context.newPage();
  await page.goto(`${HOST}/`);
  const frame = await mountProduct(page);
  const text = await frame.locator('body').evaluate(() => document.body.innerText);
  assert.doesNotMatch(text, /Tiny SD/, text);
  await page.close();

  // Added (confirmed) on Darkroom's own page, the model is offered by a widget on a host of the
  // same site (whose storage is Darkroom's own).
  const own = await context.newPage();
  const address = `${APP_URL}?${FIXTURE}`;
  await own.goto(address);
  await confirmAddedModels(own, address);
  await own.waitForSelector('[data-model="tiny-sd"]', { state: 'attached' });
  await own.close();
  const neighbour = await context.newPage();
  await neighbour.goto(`${SAME_SITE}/`);
  const widget = await mountProduct(neighbour);
  await widget.locator('#embed-model', { hasText: 'Tiny SD' }).waitFor({ timeout: 30_000 });
  await neighbour.close();
});

test('the app itself cannot be framed by another site; only the widget page can', async () => {
  const page = await context.newPage();
  const refusals = [];
  page.on('console', (m) => { if (/frame-ancestors/.test(m.text())) refusals.push(m.text()); });
  await page.goto(`${HOST}/`);
  await page.evaluate((src) => {
    const frame = document.createElement('iframe');
    frame.src = src;
    document.body.append(frame);
  }, APP_URL);
  // Chromium refuses the frame and says why (the app's policy: frame-ancestors 'none').
  for (let i = 0; i < 100 && refusals.length === 0; i++) await page.waitForTimeout(100);
  assert.ok(refusals.some((t) => t.includes("frame-ancestors 'none'")), `refused: ${refusals}`);
  const app = page.frames().find((f) => f !== page.mainFrame());
  assert.equal(await app.$('#tab-generate').catch(() => null), null, 'no app inside the frame');
  // The widget page, mounted by embed.js, is framed and answers.
  await mount(page);
  const widget = page.frames().find((f) => f.url().includes('/embed.html?'));
  assert.ok(widget, page.frames().map((f) => f.url()).join(', '));
  await page.close();
});
