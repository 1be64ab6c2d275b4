// Drives Chromium against rain-edge's admin map (started by tests/browser.rs):
// logs in with ?token=, sees origin `a` up, writes READY_FILE, waits (without a
// reload) for it to turn down when the test stops its server, opens the
// slowest page's waterfall. Screenshots: MAP_PNG, WATERFALL_PNG.
// Usage: node map.mjs ADMIN_BASE TOKEN READY_FILE MAP_PNG WATERFALL_PNG
import { chromium } from 'playwright-core';
import { writeFileSync } from 'node:fs';

const [admin, token, ready, mapPng, waterfallPng] = process.argv.slice(2);
const failures = [];
const check = (name, ok, detail) => { if (!ok) failures.push(`${name}: ${JSON.stringify(detail)}`); console.log(name, ok ? 'ok' : 'FAILED', JSON.stringify(detail)); };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1150, height: 700 } });
  const login = await page.goto(`${admin}/`, { waitUntil: 'load' });
  check('the map asks for the token first', login.status() === 401 && (await page.$('form')) !== null, login.status());
  await page.goto(`${admin}/?token=${encodeURIComponent(token)}`, { waitUntil: 'load' });
  await page.waitForSelector('g.origin[data-origin="a"][data-health="up"]', { timeout: 10000 });
  check('origin a is drawn up, with its server', (await page.$$('g.origin[data-origin="a"] g.server')).length === 1, 'server');
  writeFileSync(ready, 'up');
  let turned = true;
  await page.waitForSelector('g.origin[data-origin="a"][data-health="down"]', { timeout: 20000 }).catch(() => { turned = false; });
  check('origin a turns down without a reload', turned, page.url());
  await page.screenshot({ path: mapPng, fullPage: true });
  const link = await page.$('#slow a');
  check('the map links to the slowest pages', link !== null, 'link');
  if (link) {
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), link.click()]);
    const bars = await page.$$('g.bar[data-outcome]');
    check('the waterfall draws a bar per fragment', bars.length >= 2, bars.length);
    await page.screenshot({ path: waterfallPng, fullPage: true });
  }
} finally {
  await browser.close();
}
if (failures.length) { console.error('FAILED:\n' + failures.join('\n')); process.exit(1); }
console.log('map checks passed');
