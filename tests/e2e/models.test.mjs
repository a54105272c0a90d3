// The models in the browser: CLIP, a UNet step and the TAEF2 round trip run on WebGPU
// (SwiftShader here) through the same Rust code as natively, against the reference outputs of
// PyTorch/diffusers that the native tests use (tests/fixtures, served at /fixtures/ by the test
// server, as a CDN serves weights).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, openPage, ARTIFACTS } from './harness.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('CLIP, the UNet and TAEF2 match the reference implementations in the browser', async () => {
  const { context, page, problems } = await openPage(browser, { query: 'dev/?check=models&fixtures=/fixtures/' });
  await page.waitForSelector('#model-check:is([data-status="pass"], [data-status="fail"], [data-status="error"])', { timeout: 300_000 });
  const result = await page.evaluate(() => window.__darkroomModelCheck);
  assert.ok(result, 'the page published no model check');
  assert.equal(result.error, undefined, result.error);
  const names = result.checks.map((c) => c.name);
  for (const expected of ['CLIP text encoder', 'UNet step', 'TAEF2 round trip']) {
    assert.ok(names.some((n) => n.startsWith(expected)), `missing ${expected}: ${names}`);
  }
  for (const check of result.checks) {
    assert.ok(check.passed, `${check.name}: differs by ${check.maxAbsErr} (bound ${check.bound})`);
    assert.ok(check.maxAbsErr >= 0 && check.maxAbsErr <= check.bound);
  }
  await page.screenshot({ path: path.join(ARTIFACTS, 'model-check.png'), fullPage: true });
  assert.deepEqual(problems, []);
  await context.close();
});
