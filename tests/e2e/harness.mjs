// Shared set-up for the browser tests: Debian's Chromium, headless, with WebGPU on SwiftShader.
// Run through `cargo xtask test`, which builds the app and serves it at DARKROOM_URL.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const APP_URL = process.env.DARKROOM_URL;
export const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');

// Without the background-networking flags Chromium floods the closed network with requests.
const FLAGS = [
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export async function launch() {
  if (!APP_URL) {
    throw new Error('DARKROOM_URL is not set: run the browser tests through `cargo xtask test`');
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  // Playwright gives every launch a fresh, temporary user-data-dir.
  return chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: FLAGS });
}

/// A page that records console errors and failed requests, so a test can assert there were none.
/// `bypassCSP` is for the developer check pages that download from a second local origin, which
/// the app's Content-Security-Policy (rightly) forbids.
export async function openPage(browser, { initScript, query = '', bypassCSP = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, bypassCSP });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // A failed load is reported with its URL by the response listener below.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} (${r.failure()?.errorText})`));
  if (initScript) await page.addInitScript(initScript);
  await page.goto(APP_URL + query);
  return { context, page, problems };
}

/// xorshift32, as darkroom_gpu::reference::TestRng: the same seed gives the same inputs.
export function testRng(seed) {
  let x = seed >>> 0 || 1;
  const nextU32 = () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x;
  };
  return {
    nextU32,
    nextF32: () => (nextU32() >>> 8) / 8388608 - 1,
    vec(len) { return Array.from({ length: len }, () => this.nextF32()); },
  };
}
