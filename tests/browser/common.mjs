// What the browser test files share: the environment's addresses, Chromium (the
// system's /usr/bin/chromium through playwright-core, never a download), screenshots,
// and polling a session until it closes.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** The variable `name`, without a trailing slash; run.sh sets it. */
export function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run tests/browser/run.sh`);
  return v.replace(/\/$/, '');
}

export const ARTIFACTS = process.env.ARTIFACTS_DIR || 'artifacts';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Headless Chromium; screenshots go to ARTIFACTS. */
export async function launch() {
  mkdirSync(ARTIFACTS, { recursive: true });
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

/** Saves a full-page screenshot as ARTIFACTS/`name`.png. */
export async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/**
 * Polls `read` (an async function answering the session's status) every `everyMs`
 * until it says closed; answers that status and how long it took. Fails past `limitMs`.
 */
export async function waitClosed(read, label, limitMs, everyMs = 200) {
  const start = Date.now();
  for (;;) {
    const s = await read();
    if (s.status === 'closed') return { s, waitedMs: Date.now() - start };
    if (Date.now() - start > limitMs) assert.fail(`session ${label} still open after ${limitMs} ms`);
    await sleep(everyMs);
  }
}
