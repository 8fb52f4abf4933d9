// Drives headless Chromium (Debian's package, through playwright-core: no browser download) on
// the page at URL (tests/browser/, served by the test), step by step as the test asks.
// Protocol: each line on stdin is `{"until": "<JS expression>", "timeout_ms": N}`; the driver waits
// (up to N ms, default the scenario wait) until the expression is true in the page (it may call
// window.snapshot()), then writes
// `READY <snapshot>` on stderr. `{"quit": true}` (or the end of stdin) closes the browser and
// prints one JSON line on stdout: the last snapshot, the page's uncaught exceptions and the
// errors logged to its console.
// Usage: node browser_page.mjs PORT URL   (CHROMIUM overrides /usr/bin/chromium)

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

import { WAIT_MS, cli, fail, run, signalReady } from './lib.mjs';

const { args } = cli();
const url = args[0];
if (!url) fail('usage: node browser_page.mjs PORT URL');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

run(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'fastrelay-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const pageErrors = [];
  const consoleErrors = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    const response = await page.goto(url, { timeout: WAIT_MS });
    if (!response || !response.ok()) {
      throw new Error(`GET ${url}: ${response ? response.status() : 'no response'}`);
    }
    const snapshot = () => page.evaluate(() => window.snapshot());
    let last = null;
    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
      const command = JSON.parse(line);
      if (command.quit) break;
      try {
        await page.waitForFunction(command.until, null, { timeout: command.timeout_ms || WAIT_MS });
      } catch (error) {
        const shown = JSON.stringify(await snapshot());
        throw new Error(`page never got to ${command.until}: ${error.message}\npage: ${shown}`);
      }
      last = await snapshot();
      signalReady(last);
    }
    return {
      snapshot: last ?? (await snapshot()),
      page_errors: pageErrors,
      console_errors: consoleErrors,
    };
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
});
