// Browser tests of the CRM example (examples/crm) in headless Chromium, through
// playwright-core with the system's /usr/bin/chromium (no browser download).
//
// Run with: tests/browser/run.sh (it builds the CRM, starts two servers with short
// timeouts and sets the variables below), or by hand with the servers already running:
//   CRM_URL=http://127.0.0.1:PORT CRM_IDLE_URL=http://127.0.0.1:PORT2 \
//   ARTIFACTS_DIR=../../artifacts/browser node --test crm.test.mjs
//
// CRM_URL:      heartbeat every 2 s, grace 1 s (heartbeat timeout 3 s), idle timeout 30 s
// CRM_IDLE_URL: heartbeat every 2 s, grace 1 s, idle timeout 6 s
// Both serve /debug/sessions/{id}: a session's status and close reason by its public id
// (reading it is not activity). Each test saves a screenshot into ARTIFACTS_DIR.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { launch, required, shot, sleep, waitClosed as closedAfter } from './common.mjs';

const CRM = required('CRM_URL');
const CRM_IDLE = required('CRM_IDLE_URL');
const HEARTBEAT_TIMEOUT_MS = (2 + 1) * 1000;
const IDLE_TIMEOUT_MS = 6 * 1000;

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

async function login(page, base, userId, password) {
  await page.goto(`${base}/authenticate.shtml`);
  await page.fill('#userId', String(userId));
  await page.fill('#password', password);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/authenticate')), page.click('#login')]);
}

async function sessionStatus(base, id) {
  const r = await fetch(`${base}/debug/sessions/${id}`);
  assert.equal(r.status, 200, `debug endpoint for ${id}`);
  return r.json();
}

/** Polls until the session is closed; answers its status and how long that took. */
function waitClosed(base, id, limitMs) {
  return closedAfter(() => sessionStatus(base, id), id, limitMs);
}

test('a sales person logs in and sees their top 3 customers', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await login(page, CRM, 1, 'ann-demo-pass');
  assert.equal(new URL(page.url()).pathname, '/home');
  assert.equal(await page.textContent('#welcome'), 'Welcome, Ann Martin');
  const customers = await page.$$eval('#top3 td.customer', (tds) => tds.map((t) => t.textContent));
  assert.deepEqual(customers, ['Cobalt Systems', 'Acme Industries', 'Blue Ocean Travel']);

  const [cookie] = (await context.cookies()).filter((c) => c.name === '4DSID_CRM');
  assert.ok(cookie, 'the 4DSID_CRM cookie is set');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Lax');
  assert.equal(cookie.path, '/');
  assert.equal(await page.evaluate(() => document.cookie.includes('4DSID_CRM')), false, 'not readable from script');
  await page.waitForFunction(() => document.getElementById('heartbeat-state').textContent.startsWith('on'));
  await shot(page, 'login-top3');
  await context.close();
});

test('the WebAdmin page refuses a sales person without the privilege and admits one with it', async () => {
  const bruno = await browser.newContext();
  const page = await bruno.newPage();
  await login(page, CRM, 2, 'bruno-demo-pass');
  const refused = await page.goto(`${CRM}/admin`);
  assert.equal(refused.status(), 403);
  assert.match(await page.textContent('body'), /needs the WebAdmin privilege/);
  await shot(page, 'webadmin-refused');
  await bruno.close();

  const ann = await browser.newContext();
  const admin = await ann.newPage();
  await admin.goto(`${CRM}/admin`);
  assert.equal(new URL(admin.url()).pathname, '/authenticate.shtml', 'a guest is sent to log in');
  await admin.fill('#userId', '1');
  await admin.fill('#password', 'ann-demo-pass');
  await Promise.all([admin.waitForURL(/\/admin$/), admin.click('#login')]);
  assert.equal(await admin.textContent('#admin-title'), 'WebAdmin: open sessions');
  assert.match(await admin.textContent('#sessions'), /Ann Martin/);
  await admin.waitForFunction(() => document.getElementById('heartbeat-state').textContent.startsWith('on'));
  await shot(admin, 'webadmin-admitted');
  await ann.close();
});

test('an open page keeps its session past the heartbeat timeout; closing it ends the session heartbeat_lost', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await login(page, CRM, 3, 'chloe-demo-pass');
  const id = (await page.textContent('#session-id')).trim();
  await page.waitForFunction(() => window.sessiondHeartbeat && window.sessiondHeartbeat.beats >= 1);
  const first = await sessionStatus(CRM, id);
  assert.equal(first.heartbeat.active, true);
  assert.equal(first.heartbeat.interval_s, 2);

  // More than twice the heartbeat timeout with the page open and no user activity.
  await sleep(2 * HEARTBEAT_TIMEOUT_MS + 1000);
  const alive = await sessionStatus(CRM, id);
  assert.equal(alive.status, 'open', 'the open page kept it');
  assert.ok(alive.last_heartbeat_ms > first.last_heartbeat_ms, 'beats arrived');
  assert.equal(alive.last_activity_ms, first.last_activity_ms, 'beats are not activity');
  await shot(page, 'heartbeat-open');

  await context.close();
  const { s, waitedMs } = await waitClosed(CRM, id, HEARTBEAT_TIMEOUT_MS + 5000);
  assert.equal(s.reason, 'heartbeat_lost');
  assert.ok(waitedMs <= HEARTBEAT_TIMEOUT_MS + 2500, `closed ${waitedMs} ms after the page`);

  // What a user coming back sees: the login page.
  const again = await browser.newPage();
  await again.goto(`${CRM}/home`);
  assert.equal(new URL(again.url()).pathname, '/authenticate.shtml');
  await shot(again, 'heartbeat-lost-back-to-login');
  await again.close();
});

test('a page with the heartbeat off lives until the idle timeout', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await login(page, CRM_IDLE, 1, 'ann-demo-pass');
  await page.goto(`${CRM_IDLE}/payment`);
  const loadedAt = Date.now();
  const id = (await page.textContent('#session-id')).trim();
  await page.waitForFunction(() => window.sessiondHeartbeat?.status === 'open' && !window.sessiondHeartbeat.active);
  assert.equal((await sessionStatus(CRM_IDLE, id)).heartbeat.active, false);

  // Past the heartbeat timeout, within the idle timeout: still open.
  await sleep(HEARTBEAT_TIMEOUT_MS + 1500);
  assert.equal((await sessionStatus(CRM_IDLE, id)).status, 'open', 'no heartbeat needed here');
  await shot(page, 'heartbeat-off-payment');

  const { s } = await waitClosed(CRM_IDLE, id, IDLE_TIMEOUT_MS + 5000);
  assert.equal(s.reason, 'idle_timeout');
  const lived = Date.now() - loadedAt;
  assert.ok(lived >= IDLE_TIMEOUT_MS - 1000, `lived ${lived} ms`);

  await page.reload();
  assert.equal(new URL(page.url()).pathname, '/authenticate.shtml', 'the session is gone');
  await shot(page, 'idle-timeout-back-to-login');
  await context.close();
});

// --- Safe sign-in (docs/CONCEPTS.md "Safe sign-in") ---------------------------------

/**
 * Serves `html` on 127.0.0.1, a free port: another origin of the same site as the CRM
 * (a sibling port), and, named `localhost`, another site altogether. Answers its two
 * base URLs and a close function.
 */
async function attackerSite(html) {
  const server = createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(html);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    sameSite: `http://127.0.0.1:${port}`,
    crossSite: `http://localhost:${port}`,
    close: () => new Promise((r) => server.close(r)),
  };
}

/** An auto-submitting form, as a hostile page would hold it. */
function autoPost(action, fields = {}) {
  const inputs = Object.entries(fields)
    .map(([k, v]) => `<input type="hidden" name="${k}" value="${v}">`)
    .join('');
  return `<!DOCTYPE html><body onload="document.forms[0].submit()">
    <form method="post" action="${action}">${inputs}</form></body>`;
}

test('a second user signing in on the same browser starts clean', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await login(page, CRM, 1, 'ann-demo-pass');
  const annId = (await page.textContent('#session-id')).trim();
  // Ann walks away without logging out; Bruno signs in on the same browser.
  await login(page, CRM, 2, 'bruno-demo-pass');
  assert.equal(await page.textContent('#welcome'), 'Welcome, Bruno Petit');
  const customers = await page.$$eval('#top3 td.customer', (tds) => tds.map((t) => t.textContent));
  assert.ok(!customers.includes('Cobalt Systems'), `Bruno sees his own customers: ${customers}`);
  const brunoId = (await page.textContent('#session-id')).trim();
  assert.notEqual(brunoId, annId, 'a new session');
  const ann = await sessionStatus(CRM, annId);
  assert.equal(ann.status, 'closed');
  assert.equal(ann.reason, 'user_changed');
  await shot(page, 'signin-second-user');
  await context.close();
});

test("another site's page can neither sign the user in nor log them out", async () => {
  for (const kind of ['sameSite', 'crossSite']) {
    // Logout from a sibling port (same site: SameSite=Lax sends the cookie) or from
    // another site: refused, the user stays signed in.
    const logout = await attackerSite(autoPost(`${CRM}/logout`));
    const context = await browser.newContext();
    const page = await context.newPage();
    await login(page, CRM, 3, 'chloe-demo-pass');
    const id = (await page.textContent('#session-id')).trim();
    const refused = page.waitForResponse((r) => r.url() === `${CRM}/logout`);
    await page.goto(logout[kind]);
    assert.equal((await refused).status(), 403, `${kind} logout`);
    await page.waitForURL(`${CRM}/logout`);
    assert.equal((await sessionStatus(CRM, id)).status, 'open', `${kind}: still signed in`);
    await page.goto(`${CRM}/home`);
    assert.equal(new URL(page.url()).pathname, '/home');
    await shot(page, `csrf-logout-${kind}`);
    await context.close();
    await logout.close();

    // Login CSRF: the attacker's page signs a fresh browser in as the attacker.
    const plant = await attackerSite(
      autoPost(`${CRM}/authenticate`, { userId: '2', password: 'bruno-demo-pass' }),
    );
    const victim = await browser.newContext();
    const vpage = await victim.newPage();
    const answer = vpage.waitForResponse((r) => r.url() === `${CRM}/authenticate`);
    await vpage.goto(plant[kind]);
    assert.equal((await answer).status(), 403, `${kind} login`);
    await vpage.waitForURL(`${CRM}/authenticate`);
    const cookies = (await victim.cookies()).filter((c) => c.name.endsWith('4DSID_CRM'));
    assert.deepEqual(cookies, [], `${kind}: no session planted`);
    await victim.close();
    await plant.close();
  }
});

test('next= never sends the browser off-site and never fails the sign-in', async () => {
  for (const next of ['/\t/evil.example/', '//evil.example/', '/\\evil.example', '/home\r\nX: y', '/\u007f']) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${CRM}/authenticate.shtml?next=${encodeURIComponent(next)}`);
    await page.fill('#userId', '1');
    await page.fill('#password', 'ann-demo-pass');
    await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/authenticate')), page.click('#login')]);
    const url = new URL(page.url());
    assert.equal(url.origin, CRM, `${JSON.stringify(next)} stayed on the CRM`);
    assert.equal(url.pathname, '/home', JSON.stringify(next));
    await context.close();
  }
  // A path on the CRM is followed.
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${CRM}/authenticate.shtml?next=${encodeURIComponent('/payment')}`);
  await page.fill('#userId', '1');
  await page.fill('#password', 'ann-demo-pass');
  await Promise.all([page.waitForURL(/\/payment$/), page.click('#login')]);
  await shot(page, 'signin-next-followed');
  await context.close();
});

test('"your sessions" shows where else the user is signed in and signs those out', async () => {
  const laptop = await browser.newContext({ userAgent: 'Laptop-Browser/1.0' });
  const phone = await browser.newContext({ userAgent: 'Phone-Browser/2.0' });
  const tablet = await browser.newContext({ userAgent: 'Tablet-Browser/3.0' });
  const other = await browser.newContext({ userAgent: 'Bruno-Browser/9.9' });
  const pages = {};
  for (const [name, ctx] of Object.entries({ laptop, phone, tablet })) {
    pages[name] = await ctx.newPage();
    await login(pages[name], CRM, 1, 'ann-demo-pass');
  }
  const brunoPage = await other.newPage();
  await login(brunoPage, CRM, 2, 'bruno-demo-pass');
  const phoneId = (await pages.phone.textContent('#session-id')).trim();

  const page = pages.laptop;
  await Promise.all([page.waitForURL(/\/sessions$/), page.click('#sessions-link')]);
  // Ann's sessions of earlier tests may still be open (until their heartbeat lapses).
  const agents = await page.$$eval('#my-sessions td.agent', (tds) => tds.map((t) => t.textContent));
  for (const mine of ['Laptop-Browser/1.0', 'Phone-Browser/2.0', 'Tablet-Browser/3.0']) {
    assert.ok(agents.includes(mine), `${mine} is listed: ${agents}`);
  }
  assert.ok(!(await page.content()).includes('Bruno-Browser'), "never another user's sessions");
  await shot(page, 'your-sessions');

  // Sign the phone out.
  await Promise.all([
    page.waitForURL(/closed=1$/),
    page.click(`tr.session[data-id="${phoneId}"] button.close-session`),
  ]);
  assert.equal(await page.textContent('#notice'), '1 session signed out.');
  assert.equal((await sessionStatus(CRM, phoneId)).reason, 'logout');
  await pages.phone.goto(`${CRM}/home`);
  assert.equal(new URL(pages.phone.url()).pathname, '/authenticate.shtml', 'the phone is signed out');

  // Then everywhere else: the tablet goes, the laptop and Bruno stay.
  await Promise.all([page.waitForURL(/closed=\d+$/), page.click('#close-others')]);
  assert.equal(await page.textContent('#no-others'), 'You are signed in nowhere else.');
  await pages.tablet.goto(`${CRM}/home`);
  assert.equal(new URL(pages.tablet.url()).pathname, '/authenticate.shtml');
  await page.goto(`${CRM}/home`);
  assert.equal(new URL(page.url()).pathname, '/home', 'this browser stays signed in');
  await brunoPage.goto(`${CRM}/home`);
  assert.equal(new URL(brunoPage.url()).pathname, '/home', 'another user is untouched');
  await shot(page, 'your-sessions-after');
  for (const ctx of [laptop, phone, tablet, other]) await ctx.close();
});
