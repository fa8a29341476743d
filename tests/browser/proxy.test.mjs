// The browser heartbeat served by the sessiond server, in headless Chromium, on pages of
// a Python app behind a real nginx (examples/python-signin): signing in through the
// proxy, the heartbeat keeping the session while the page is open and ending it
// `heartbeat_lost` once the page is closed, never past the idle timeout, a page of
// another site unable to change it, and a page of an allowed origin beating directly
// (CORS with the browser's cookie).
//
// Run with tests/browser/run.sh, which starts two copies of the example and sets:
//   PROXY_URL, PROXY_SESSIOND, PROXY_KEY: heartbeat 2 s + grace 1 s, idle timeout 30 s,
//     pages of http://127.0.0.1:$ALLOWED_PORT allowed to call the heartbeat
//   PROXY_IDLE_URL, PROXY_IDLE_SESSIOND, PROXY_IDLE_KEY: heartbeat 2 s + 1 s, idle 6 s
//   ALLOWED_PORT: where this test serves the allowed origin's page
// The sessions' state is read with the app key from sessiond itself (reading is not
// activity). Screenshots go to ARTIFACTS_DIR.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import { launch, required, shot as save, sleep, waitClosed as closedAfter } from './common.mjs';

const env = required;
const MAIN = { url: env('PROXY_URL'), sessiond: env('PROXY_SESSIOND'), key: env('PROXY_KEY') };
const IDLE = { url: env('PROXY_IDLE_URL'), sessiond: env('PROXY_IDLE_SESSIOND'), key: env('PROXY_IDLE_KEY') };
const ALLOWED_PORT = Number(env('ALLOWED_PORT'));
const HEARTBEAT_TIMEOUT_MS = (2 + 1) * 1000;
const IDLE_TIMEOUT_MS = 6 * 1000;

let browser;
const servers = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
  for (const s of servers) s.close();
});

/** Serves `html` at / on 127.0.0.1:`port` (0: any); answers its origin. */
async function serve(html, port = 0) {
  const server = createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(html);
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  servers.push(server);
  return `http://127.0.0.1:${server.address().port}`;
}

function shot(page, name) {
  return save(page, `proxy-${name}`);
}

/** Signs in through nginx; answers the session's public id. */
async function signIn(page, site, user = 'ann', password = `${user}-password`) {
  await page.goto(`${site.url}/`);
  assert.equal(new URL(page.url()).pathname, '/login', 'a browser without a session is sent to sign in');
  await page.fill('#user', user);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL((u) => u.pathname === '/'), page.click('#signin')]);
  return (await page.textContent('#session')).trim();
}

/** The session as sessiond reports it (the app key; not activity). */
async function session(site, id) {
  const r = await fetch(`${site.sessiond}/v1/sessions/${id}`, {
    headers: { Authorization: `Bearer ${site.key}` },
  });
  assert.equal(r.status, 200, `GET /v1/sessions/${id}`);
  return r.json();
}

function waitClosed(site, id, limitMs) {
  return closedAfter(() => session(site, id), id, limitMs, 100);
}

test('signed in through nginx, an open page keeps its session; closing it ends it heartbeat_lost', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const id = await signIn(page, MAIN);
  assert.equal(await page.textContent('#user'), 'ann');
  const [cookie] = (await context.cookies()).filter((c) => c.name === 'SESSION');
  assert.ok(cookie && cookie.httpOnly && cookie.sameSite === 'Lax', 'the app set the cookie as sessiond-axum does');
  await page.waitForFunction(() => window.sessiondHeartbeat && window.sessiondHeartbeat.beats >= 1);
  const first = await session(MAIN, id);
  assert.equal(first.heartbeat.active, true);
  assert.equal(first.heartbeat.interval_s, 2);

  // More than twice the heartbeat timeout, the page open, no activity.
  await sleep(2 * HEARTBEAT_TIMEOUT_MS + 1000);
  const alive = await session(MAIN, id);
  assert.equal(alive.status, 'open', 'the open page kept it');
  assert.ok(alive.last_heartbeat_at > first.last_heartbeat_at, 'beats arrived');
  assert.equal(alive.last_activity_at, first.last_activity_at, 'beats are not activity');
  assert.match(await page.textContent('#heartbeat'), /^open \(on, every 2 s\)/);
  await shot(page, 'heartbeat-open');

  await page.close();
  const { s, waitedMs } = await waitClosed(MAIN, id, HEARTBEAT_TIMEOUT_MS + 2000);
  assert.equal(s.reason, 'heartbeat_lost');
  assert.ok(waitedMs <= HEARTBEAT_TIMEOUT_MS + 2000, `closed ${waitedMs} ms after the page`);

  // The next page of that browser goes to sign in, its dead cookie cleared.
  const again = await context.newPage();
  await again.goto(`${MAIN.url}/`);
  assert.equal(new URL(again.url()).pathname, '/login');
  assert.equal((await context.cookies()).filter((c) => c.name === 'SESSION').length, 0, 'the dead cookie is gone');
  await context.close();
});

test('an open page never keeps an idle session past its idle timeout', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const id = await signIn(page, IDLE, 'root');
  await page.waitForFunction(() => window.sessiondHeartbeat && window.sessiondHeartbeat.beats >= 1);
  const opened = await session(IDLE, id);
  const lastActivity = Date.parse(opened.last_activity_at);
  const { s } = await waitClosed(IDLE, id, IDLE_TIMEOUT_MS + 4000);
  assert.equal(s.reason, 'idle_timeout', 'the beating page did not extend it');
  const late = Date.parse(s.closed_at) - lastActivity;
  assert.ok(late >= IDLE_TIMEOUT_MS, `not before the idle timeout (${late} ms)`);
  assert.ok(late <= IDLE_TIMEOUT_MS + 1500, `at the idle timeout (${late} ms after the last activity)`);
  // The page learns it at its next beat.
  await page.waitForFunction(() => window.sessiondHeartbeat.status === 'closed', null, { timeout: 5000 });
  await shot(page, 'idle-closed');
  await context.close();
});

test('a page of another site cannot turn the heartbeat on to end the session', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const id = await signIn(page, MAIN);
  // A page with the heartbeat off: only the idle timeout applies.
  await page.goto(`${MAIN.url}/quiet`);
  await page.waitForFunction(() => window.sessiondHeartbeat && window.sessiondHeartbeat.status === 'open');
  assert.equal((await session(MAIN, id)).heartbeat.active, false);

  // Another origin on the same host (same site: the browser sends the Lax cookie) tries
  // every way a page has to ask for a 1-second heartbeat that nobody will keep.
  const endpoint = `${MAIN.url}/_sessiond/heartbeat`;
  const evil = await serve(`<!doctype html><body>
    <form id="f" method="post" action="${endpoint}" enctype="text/plain">
      <input name='{"active":true,"interval_s":1,"x":"' value='"}'></form>
    <script>
      window.results = [];
      const body = JSON.stringify({ active: true, interval_s: 1 });
      async function attempt(name, init) {
        try { const r = await fetch(${JSON.stringify(endpoint)}, init); window.results.push(name + ':' + r.status); }
        catch (e) { window.results.push(name + ':blocked'); }
      }
      window.attack = async () => {
        await attempt('cors-json', { method: 'PUT', credentials: 'include', headers: { 'Content-Type': 'application/json' }, body });
        await attempt('no-cors-put', { method: 'PUT', mode: 'no-cors', credentials: 'include', body });
        await attempt('no-cors-post', { method: 'POST', mode: 'no-cors', credentials: 'include', headers: { 'Content-Type': 'text/plain' }, body });
      };
    </script></body>`);
  const attacker = await context.newPage();
  await attacker.goto(evil);
  await attacker.evaluate(() => window.attack());
  const results = await attacker.evaluate(() => window.results);
  assert.equal(results[0], 'cors-json:blocked', 'the preflight is refused');
  await Promise.all([attacker.waitForNavigation(), attacker.evaluate(() => document.getElementById('f').submit())]);
  assert.match(await attacker.textContent('body'), /cross_site_request|unsupported_media_type/);

  await sleep(HEARTBEAT_TIMEOUT_MS + 1000);
  const after = await session(MAIN, id);
  assert.equal(after.status, 'open', 'the session survived');
  assert.equal(after.heartbeat.active, false, 'its heartbeat was not changed');

  // The same request from the app's own page is what the attack wanted: it works there.
  const own = await page.evaluate(async (url) => {
    const r = await fetch(url, { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ active: true, interval_s: 1 }) });
    return r.json();
  }, endpoint);
  assert.equal(own.active, true);
  assert.equal(own.interval_s, 1);
  await shot(attacker, 'cross-site-refused');
  await context.close();
});

test('a page of an allowed origin beats directly at sessiond with the browser cookie', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const id = await signIn(page, MAIN);
  await page.goto(`${MAIN.url}/quiet`);
  await page.waitForFunction(() => window.sessiondHeartbeat && window.sessiondHeartbeat.status === 'open');

  // Another origin of the same site, listed in the app's web.allowed_origins, loads the
  // script from sessiond itself (not through nginx).
  const allowed = await serve(`<!doctype html><body><p id="status">starting</p>
    <script>document.addEventListener('sessiond:heartbeat', (e) => {
      document.getElementById('status').textContent = e.detail.status + ' ' + e.detail.active + ' ' + e.detail.interval;
    });</script>
    <script src="${MAIN.sessiond}/v1/apps/shop/heartbeat.js" data-interval="2" defer></script></body>`, ALLOWED_PORT);
  const other = await context.newPage();
  await other.goto(allowed);
  await other.waitForFunction(() => document.getElementById('status').textContent === 'open true 2');
  const s = await session(MAIN, id);
  assert.equal(s.heartbeat.active, true);
  assert.equal(s.heartbeat.interval_s, 2);
  await shot(other, 'allowed-origin');
  await context.close();
});

test('/admin/ needs WebAdmin, checked by the app too (a path nginx cleans up differently)', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, MAIN);
  const refused = await page.goto(`${MAIN.url}/admin/`);
  assert.equal(refused.status(), 403, 'nginx asks with privilege=WebAdmin');
  // `/admin/../` is checked by nginx as `/` (no privilege asked) but reaches the app
  // as an /admin/ path: the app refuses it itself.
  const [cookie] = (await context.cookies()).filter((c) => c.name === 'SESSION');
  const status = await new Promise((resolve, reject) => {
    const u = new URL(MAIN.url);
    const req = request({ host: u.hostname, port: u.port, path: '/admin/../', headers: { Cookie: `SESSION=${cookie.value}` } }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', reject);
    req.end();
  });
  assert.equal(status, 403);
  await context.close();

  const admin = await browser.newContext();
  const rootPage = await admin.newPage();
  await signIn(rootPage, MAIN, 'root');
  const admitted = await rootPage.goto(`${MAIN.url}/admin/`);
  assert.equal(admitted.status(), 200);
  assert.equal(await rootPage.textContent('h1'), 'Administration');
  await admin.close();
});
