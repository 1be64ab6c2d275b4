// Drives Debian's Chromium against a running rain-edge (started by
// tests/browser.rs): computed styles of scoped classes, a link clicked inside
// a fragment and the back button, a form submitted, an async fragment moved
// into place, a fetch that keeps its origin session, a WebSocket echo,
// Wicket Ajax (a link and a form) inside the page. Prints what it saw; exits 1 on any failure.
// Usage: node check.mjs BASE_URL SCREENSHOT_PATH
import { chromium } from 'playwright-core';

const [base, shot] = process.argv.slice(2);
const failures = [];
const seen = {};
const check = (name, ok, detail) => {
  seen[name] = detail;
  if (!ok) failures.push(`${name}: ${JSON.stringify(detail)}`);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  await page.goto(base + '/', { waitUntil: 'load' });

  const color = (sel) => page.$eval(sel, (el) => getComputedStyle(el).color);
  const layout = await color('#layout-box');
  const a = await color('#a-box');
  const b = await color('#b-box');
  check('layout .box keeps the layout style (green)', layout === 'rgb(0, 128, 0)', layout);
  check('origin a .box gets its own style (red)', a === 'rgb(255, 0, 0)', a);
  check('origin b .box gets its own linked stylesheet (blue)', b === 'rgb(0, 0, 255)', b);

  const c = await color('#c-box');
  const only = await color('#layout-only');
  check('wrap origin c styles its own .box (purple)', c === 'rgb(128, 0, 128)', c);
  check("wrap origin c's rules stay inside its fragment", only !== 'rgb(1, 2, 3)', only);
  const cClass = await page.$eval('#c-box', (el) => el.className);
  check('wrap leaves class names as they are', cClass === 'box', cClass);

  // The live fragment: a WebSocket through rain-edge ticks and echoes, and
  // a button's fetch counts in the origin's own (hidden) session.
  await page.waitForFunction(() => (document.getElementById('live-ticks') || {}).textContent?.startsWith('tick'), null, { timeout: 10000 });
  const echo = await page.textContent('#live-echo');
  check('WebSocket echo through rain-edge', echo === 'echo: hello from the page', echo);
  await page.click('#live-click');
  await page.waitForFunction(() => document.getElementById('live-clicks').textContent === '1', null, { timeout: 5000 });
  await page.click('#live-click');
  await page.waitForFunction(() => document.getElementById('live-clicks').textContent === '2', null, { timeout: 5000 }).catch(() => {});
  const clicks = await page.textContent('#live-clicks');
  check('fetch keeps its origin session across two clicks', clicks === '2', clicks);
  const cookies = (await page.context().cookies()).map((c) => c.name);
  check("the origin's session cookie stays hidden", !cookies.includes('live_sid') && cookies.includes('rain_sid'), cookies);

  // Wicket's Ajax inside the page: the calls go through rain-edge, the
  // answer's component comes back rewritten (classes renamed) and is put in
  // place without a reload.
  const before = page.url();
  await page.click('#ajax-link');
  await page.waitForFunction(() => (document.getElementById('ajaxcount') || {}).textContent?.includes('ajax=1'), null, { timeout: 5000 }).catch(() => {});
  const ajax = await page.$eval('#ajaxcount', (el) => ({ text: el.textContent, cls: el.className }));
  check('Wicket Ajax link updates its component in place', ajax.text.includes('ajax=1') && ajax.cls === 'wicket-ajaxcount' && page.url() === before, ajax);
  await page.fill('#ajax-form input[name=item]', 'pear');
  await page.click('#ajax-form button');
  await page.waitForFunction(() => [...document.querySelectorAll('#items li')].some((li) => li.textContent === 'pear'), null, { timeout: 5000 }).catch(() => {});
  const ajaxItems = await page.$$eval('#items li', (lis) => lis.map((li) => li.textContent));
  check('Wicket Ajax form posts inside the page', ajaxItems.includes('pear') && page.url() === before, { ajaxItems, url: page.url() });

  const asyncParent = await page.$eval('#async-item', (el) => el.parentElement && el.parentElement.id);
  check('async fragment moved into its place', asyncParent === 'async-slot', asyncParent);

  // A link inside fragment b: b moves, a stays, the URL carries b's state.
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('#b-next')]);
  const afterClick = { url: page.url(), b: await page.textContent('#b-box'), a: await page.textContent('#a-box') };
  check('link moved its fragment', afterClick.b.includes('NEXT') && afterClick.url.includes('rain.b='), afterClick);
  check('other fragment stayed', afterClick.a.trim() === 'A', afterClick);
  await page.goBack({ waitUntil: 'load' });
  const back = await page.textContent('#b-box');
  check('back button restores the fragment', back.trim() === 'B', back);

  // A form inside the PHP fragment: Post/Redirect/Get through rain-edge.
  await page.fill('.php-php-form input[name=item]', 'umbrella');
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('.php-php-form button')]);
  const items = await page.$$eval('.php-items li', (lis) => lis.map((li) => li.textContent));
  check('form posted once, result shown in the page', items.length === 1 && items[0] === 'umbrella', { items, url: page.url() });
  check('still the whole page', (await page.textContent('#layout-box')).includes('LAYOUT'), 'layout box');

  await page.screenshot({ path: shot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen, null, 1));
if (failures.length) {
  console.error('FAILED:\n' + failures.join('\n'));
  process.exit(1);
}
console.log('browser checks passed');
