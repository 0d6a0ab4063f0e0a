// The support console (SPEC §9) in a real browser: Debian's chromium driven
// by playwright-core (which downloads no browser). Started by
// tests/integration/test_console.py, which fills the Message Center and
// starts herald-api:
//
//   node tests/browser/console.test.mjs URL [TOKEN] CASE-JSON
//
// The token comes from $HERALD_CONSOLE_TOKEN (kept out of argv), else from
// the TOKEN argument. CASE-JSON: {"to": the address to search, "ids": the
// ids expected for it, newest first, "open": the id of a message with
// HTML, "xss": the id whose subject is markup, "xss_subject": that subject,
// "html_text": text of the open message's HTML, "text": of its text part}.
//
// HERALD_CONSOLE_SHOTS=DIR saves screenshots of the page there (to look at).
//
// Prints "ok: <check>" per check and a last line "RESULT <json>" ({"resent":
// new id}); exits 0 when every check passed, 1 (after "FAIL: <why>") when
// one failed, 2 on bad usage.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';

const argv = process.argv.slice(2);
if (argv.length < 2 || argv.length > 3) {
  console.error('usage: node console.test.mjs URL [TOKEN] CASE-JSON');
  process.exit(2);
}
const base = argv[0].replace(/\/$/, '');
const token = process.env.HERALD_CONSOLE_TOKEN || (argv.length === 3 ? argv[1] : '');
const spec = JSON.parse(argv[argv.length - 1]);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const T = 10000; // ms for any one wait

let passed = 0;
function ok(what) {
  passed++;
  console.log('ok: ' + what);
}
function check(cond, what, detail) {
  if (!cond) throw new Error(what + (detail === undefined ? '' : ': ' + JSON.stringify(detail)));
  ok(what);
}

// What the page must never do: a dialog (an injected alert()), an
// uncaught error, a console error, a CSP violation. The sandboxed iframe
// refusing to run the message's scripts is expected (and counted).
const problems = [];
let blockedInFrame = 0;
let expectFailedLoads = false; // the error-answer checks at the end
function watch(page) {
  page.on('dialog', (d) => {
    problems.push('a dialog fired: ' + d.type() + ' ' + JSON.stringify(d.message()));
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    const text = m.text();
    const url = (m.location() && m.location().url) || '';
    if (/Blocked script execution in 'about:srcdoc'.*sandboxed/.test(text)) {
      blockedInFrame++;
      return;
    }
    if (expectFailedLoads && /Failed to load resource: the server responded with a status of (400|401)/.test(text))
      return;
    if (m.type() === 'warning' && !/Content Security Policy|Refused/.test(text)) return;
    problems.push('console ' + m.type() + ': ' + text + (url ? ' (' + url + ')' : ''));
  });
}

async function main() {
  const t0 = Date.now();
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    headless: true,
    timeout: 30000,
  });
  try {
    // a zone that is not UTC: times are shown local, UTC in the title
    const context = await browser.newContext({
      acceptDownloads: true, timezoneId: 'America/New_York', locale: 'en-US',
    });
    // CSP violations of the page itself, reported by the browser
    await context.addInitScript(() => {
      window.__cspViolations = [];
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
      });
    });
    const page = await context.newPage();
    page.setDefaultTimeout(T);
    watch(page);
    console.log('browser ready in ' + (Date.now() - t0) + ' ms');

    // ---- the page and its headers ----
    const resp = await page.goto(base + '/');
    const h = resp.headers();
    check(resp.status() === 200 && h['content-type'].startsWith('text/html'), 'GET / is the page');
    const csp = h['content-security-policy'] || '';
    check(/script-src 'self'(;|$)/.test(csp) && /default-src 'none'/.test(csp) &&
      /frame-ancestors 'none'/.test(csp), 'a strict CSP', csp);
    check(h['x-content-type-options'] === 'nosniff' && h['referrer-policy'] === 'no-referrer',
      'nosniff and no-referrer');

    // ---- sign in ----
    const tokenInput = page.locator('input[name=token]');
    await tokenInput.waitFor({ state: 'visible' });
    ok('asks for a token');
    await tokenInput.fill(token);
    await tokenInput.press('Enter');
    await page.locator('form#search').waitFor({ state: 'visible' });
    check(await page.evaluate(() => Object.values(sessionStorage).length === 1),
      'token kept in sessionStorage');

    // ---- search by recipient (Enter submits) ----
    const to = page.locator('form#search input[name=to]');
    await to.fill(spec.to);
    await to.press('Enter');
    await page.locator(`table#results tr[data-id="${spec.ids[0]}"]`).waitFor();
    const ids = await page.locator('table#results tbody tr').evaluateAll(
      (rows) => rows.map((r) => r.dataset.id));
    check(JSON.stringify(ids) === JSON.stringify(spec.ids), 'the rows, newest first', ids);

    // the markup subject is shown as its characters, and is no element
    const xssRow = page.locator(`table#results tr[data-id="${spec.xss}"]`);
    const subject = await xssRow.locator('td').nth(3).textContent();
    check(subject === spec.xss_subject, 'a markup subject shown as text', subject);
    check(await page.locator('table#results img').count() === 0, 'no element made from a subject');
    const time = xssRow.locator('td time');
    const shown = await time.textContent();
    const title = await time.getAttribute('title');
    check(/ UTC$/.test(title) && shown !== title, 'time local, UTC in the title', [shown, title]);
    const status = xssRow.locator('td .badge');
    check(await status.textContent() === 'sent' &&
      (await status.getAttribute('class')).includes('st-sent'), 'status as a badge');

    // ---- one message ----
    await page.locator(`table#results tr[data-id="${spec.open}"]`).click();
    const box = page.locator('#message');
    await box.waitFor({ state: 'visible' });
    await page.waitForFunction((id) => document.querySelector('#m-id').textContent === id, spec.open);
    ok('a row opens #message');
    const rcpts = await page.locator('#m-recipients tbody tr').evaluateAll(
      (rows) => rows.map((r) => Array.from(r.cells).map((c) => c.textContent)));
    check(rcpts.some((r) => r[0] === spec.to && r[1] === 'to' && r[2] === 'accepted'),
      'recipients with their outcome', rcpts);
    check(rcpts.some((r) => r[3] && r[3] !== '—'), 'a recipient\'s reply', rcpts);
    check(await page.locator('#m-path').textContent() === 'relay' &&
      (await page.locator('#m-path-reason').textContent()).length > 0, 'path and why', [
      await page.locator('#m-path').textContent(), await page.locator('#m-path-reason').textContent()]);
    check((await page.locator('#m-text').textContent()).includes(spec.text), 'the text in a <pre>');
    check(await page.locator('#message pre#m-text').count() === 1, '#m-text is a pre');
    const frame = page.locator('#message iframe#m-html');
    const sandbox = await frame.getAttribute('sandbox');
    check(sandbox !== null && !/allow-scripts/.test(sandbox), 'iframe sandbox without allow-scripts',
      sandbox);
    const inner = page.frameLocator('#message iframe#m-html');
    await inner.locator('body').waitFor({ state: 'attached' });
    const body = inner.locator('body');
    check((await body.textContent()).includes(spec.html_text), 'the HTML shown in the iframe');
    check(await body.getAttribute('data-ran') === null, 'the HTML ran no script');

    const shots = process.env.HERALD_CONSOLE_SHOTS;
    if (shots) {
      await page.setViewportSize({ width: 1400, height: 900 });
      await page.screenshot({ path: shots + '/console-message.png', fullPage: true });
      await frame.screenshot({ path: shots + '/console-html.png' });
    }

    // the markup subject, opened: still text
    await xssRow.click();
    await page.waitForFunction((id) => document.querySelector('#m-id').textContent === id, spec.xss);
    check(await page.locator('#m-subject').textContent() === spec.xss_subject &&
      await page.locator('#message img').count() === 0, 'the markup subject as text in #message');

    // ---- resend ----
    await page.locator(`table#results tr[data-id="${spec.open}"]`).click();
    await page.waitForFunction((id) => document.querySelector('#m-id').textContent === id, spec.open);
    await page.locator('button#resend').click();
    const created = page.locator('#resend-new');
    await created.waitFor();
    const newId = await created.getAttribute('data-id');
    check(newId && newId !== spec.open && (await created.textContent()) === newId,
      'resend shows the new id', newId);

    // search again until a worker has recorded it: then it is the first row
    const deadline = Date.now() + 20000;
    let first = null;
    while (Date.now() < deadline) {
      await page.locator('#search-go').click();
      await page.waitForFunction(() => !document.querySelector('#search-go').disabled);
      first = await page.locator('table#results tbody tr').first().getAttribute('data-id');
      if (first === newId) break;
      await page.waitForTimeout(300);
    }
    check(first === newId, 'the resent message at the top of a new search', first);
    await page.locator(`table#results tr[data-id="${newId}"]`).click();
    await page.waitForFunction((id) => document.querySelector('#m-id').textContent === id, newId);
    check(await page.locator('#m-resend-of').textContent() === spec.open, 'it says what it resends');

    // ---- CSV export: a download with the header row ----
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.locator('#export').click(),
    ]);
    const csv = readFileSync(await download.path(), 'utf8');
    const lines = csv.split(/\r?\n/).filter(Boolean);
    check(/^id,/.test(lines[0]) && download.suggestedFilename().endsWith('.csv'),
      'CSV export downloads, header first', lines[0]);
    check(lines.length === spec.ids.length + 2 && lines.slice(1).some((l) => l.startsWith(newId + ',') || l.startsWith('"' + newId + '",')),
      'CSV rows: the search, resend included', lines);

    // nothing went wrong so far
    const violations = await page.evaluate(() => window.__cspViolations);
    check(violations.length === 0, 'no CSP violation', violations);
    check(problems.length === 0, 'no dialog, page error or console error', problems);
    check(blockedInFrame > 0, 'the browser refused the HTML\'s scripts', blockedInFrame);

    // ---- error answers ----
    expectFailedLoads = true;
    // until a day before since, both derived from now (datetime-local
    // values are the browser's local time, YYYY-MM-DDTHH:MM)
    const localInput = (ms) => {
      const d = new Date(ms);
      const p2 = (n) => String(n).padStart(2, '0');
      return `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())}T${p2(d.getHours())}:${p2(d.getMinutes())}`;
    };
    await page.locator('form#search input[name=since]').fill(localInput(Date.now() - 86400000));
    await page.locator('form#search input[name=until]').fill(localInput(Date.now() - 2 * 86400000));
    await page.locator('form#search input[name=until]').press('Enter');
    const untilError = page.locator('form#search [data-error-for="until"]');
    await page.waitForFunction(() => document.querySelector('#search [data-error-for="until"]').textContent !== '');
    check((await untilError.textContent()).length > 0 &&
      (await page.locator('form#search input[name=until]').getAttribute('class')).includes('invalid'),
      '400 {field}: the message next to the field', await untilError.textContent());
    // a revoked or wrong token: asked again
    await page.evaluate(() => sessionStorage.setItem('herald.console.token', 'hrld_wrong'));
    await page.locator('form#search input[name=since]').fill('');
    await page.locator('form#search input[name=until]').fill('');
    await page.locator('#search-go').click();
    await tokenInput.waitFor({ state: 'visible' });
    check((await page.locator('#login-error').textContent()).includes('refused'),
      '401: the token is asked for again');
    check(await page.evaluate(() => sessionStorage.length === 0), 'the refused token is forgotten');
    // sign in again, sign out
    await tokenInput.fill(token);
    await tokenInput.press('Enter');
    await page.locator('#signout').click();
    await tokenInput.waitFor({ state: 'visible' });
    check(await page.evaluate(() => sessionStorage.length === 0), 'sign out forgets the token');

    check(problems.length === 0, 'still no dialog, page error or console error', problems);
    console.log('RESULT ' + JSON.stringify({ resent: newId, ms: Date.now() - t0 }));
  } finally {
    await browser.close();
  }
}

const watchdog = setTimeout(() => {
  console.log('FAIL: the browser test took over 90 s');
  process.exit(1);
}, 90000);
main().then(() => {
  clearTimeout(watchdog);
  console.log('console: all ' + passed + ' checks passed');
  process.exit(0);
}, (e) => {
  clearTimeout(watchdog);
  console.log('FAIL: ' + (e && e.message ? e.message : e));
  if (problems.length) console.log('problems: ' + JSON.stringify(problems));
  process.exit(1);
});
