// Runs a ring lab sweep in headless Chromium, on the demo page (web/), and prints the page's
// table; --json FILE writes the result in vdpa-ringlab's format, so
// `vdpa-ringlab compare node.json chromium.json` puts Node and the browser side by side.
//
//   node scripts/web-lab.mjs [--sweep NAME] [--chains N] [--rounds N] [--json FILE]
//
// NAME is one of the page's sweeps: quick, quick-xthread, or a preset (event-idx, …).
// Needs /usr/bin/chromium (or $CHROMIUM) and src/loader/wasm-code-*.ts (node scripts/build-wasm.mjs).

import { writeFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';
import { serveWeb } from './serve-web.mjs';

function opt(name, def) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : def;
}
const sweep = opt('--sweep', 'quick');
const chains = opt('--chains', '20000');
const rounds = opt('--rounds', '3');
const json = opt('--json', null);

const server = await serveWeb();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(`${server.url}/index.html`);
  await page.waitForFunction(() => window.__demo?.ready || window.__demo?.error, undefined, { timeout: 60_000 });
  if (!(await page.$(`#lab-preset option[value="${sweep}"]`))) throw new Error(`no sweep ${sweep} on the page`);
  await page.selectOption('#lab-preset', sweep);
  await page.fill('#lab-chains', chains);
  await page.fill('#lab-rounds', rounds);
  await page.click('#lab-run');
  let last = '';
  for (;;) {
    const state = await page.getAttribute('#lab-status', 'data-state');
    const text = await page.textContent('#lab-status');
    if (text !== last && process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
    last = text;
    if (state === 'done' || state === 'failed') break;
    await new Promise((r) => setTimeout(r, 250));
  }
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  if ((await page.getAttribute('#lab-status', 'data-state')) !== 'done') throw new Error(await page.textContent('#lab-status'));
  const table = (await page.textContent('#lab-table')) ?? '';
  process.stdout.write(table.endsWith('\n') ? table : `${table}\n`);
  if (json) await writeFile(json, JSON.stringify(await page.evaluate(() => window.__demo.lab), null, 2) + '\n');
} finally {
  await browser.close();
  await server.close();
}
