// Browser tests of the sessiond admin console (headless Chromium via playwright-core).
// Run with: tests/console/run.sh (it starts the server and sets the variables below).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const BASE = process.env.SESSIOND_URL;
const ADMIN = process.env.ADMIN_TOKEN;
const KEY = process.env.APP_KEY;
const OUT = process.env.ARTIFACTS || "artifacts/console";

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
});
after(async () => { await browser?.close(); });

async function api(method, path, token, body) {
  const r = await fetch(BASE + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

const open = async (user, label) => (await api("POST", "/v1/apps/gestan/sessions", KEY, { user, client: { label } })).body;

async function signedIn(viewport = { width: 1280, height: 800 }) {
  const page = await browser.newPage({ viewport });
  await page.goto(BASE + "/admin");
  await page.getByLabel("Admin token or app key").fill(ADMIN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Apps" }).waitFor();
  return page;
}

test("a wrong token is refused", async () => {
  const page = await browser.newPage();
  await page.goto(BASE + "/admin");
  await page.getByLabel("Admin token or app key").fill("not-a-real-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").waitFor();
  assert.match(await page.getByRole("alert").innerText(), /not the admin token or an app key/);
  await page.screenshot({ path: `${OUT}/sign-in-refused.png` });
  await page.close();
});

test("sign in and see the apps with their seats", async () => {
  const page = await signedIn();
  await page.getByRole("article", { name: "App gestan" }).waitFor();
  const card = page.getByRole("article", { name: "App gestan" });
  assert.match(await card.innerText(), /Seats/);
  assert.equal(await card.locator("meter").getAttribute("max"), "5");
  await page.screenshot({ path: `${OUT}/apps.png`, fullPage: true });
  await page.close();
});

test("a session opened through the API appears live, and a kill reaches its client", async () => {
  const page = await signedIn();
  await page.getByRole("button", { name: "Manage gestan" }).click();
  await page.getByRole("heading", { name: "Sessions of gestan" }).waitFor();
  const s = await open("live-ann", "pc-live");
  const row = page.locator(`tr[data-id="${s.id}"]`);
  await row.waitFor({ timeout: 5000 });
  assert.match(await row.innerText(), /live-ann/);
  assert.match(await row.innerText(), /pc-live/);
  await page.screenshot({ path: `${OUT}/sessions-live.png`, fullPage: true });
  await row.getByRole("button", { name: /Disconnect live-ann/ }).click();
  await page.getByRole("dialog").waitFor();
  await page.screenshot({ path: `${OUT}/kill-confirm.png` });
  await page.locator("#confirm-ok").click();
  await row.waitFor({ state: "detached", timeout: 5000 });
  const r = await api("GET", "/v1/session", s.token);
  assert.equal(r.status, 410);
  assert.equal(r.body.reason, "killed");
  assert.equal(r.body.closed_by, "admin");
  await page.close();
});

test("disconnect everyone except the sessions I keep, then read the history", async () => {
  const keep = await open("ops-me", "console-pc");
  const others = [await open("bob", "pc-bob"), await open("cid", "pc-cid")];
  const page = await signedIn();
  await page.getByRole("button", { name: "Manage gestan" }).click();
  await page.locator(`tr[data-id="${keep.id}"]`).waitFor();
  await page.getByLabel("I am").fill("ops-me");
  await page.getByLabel("I am").press("Tab");
  await page.getByRole("button", { name: "Disconnect everyone except…" }).click();
  await page.getByRole("dialog").waitFor();
  const count = await page.locator("#confirm-body .count").innerText();
  assert.equal(count, "2 sessions will be disconnected.");
  assert.equal(await page.getByRole("checkbox", { name: /ops-me/ }).isChecked(), true, "my own session is kept by default");
  await page.screenshot({ path: `${OUT}/close-all-confirm.png` });
  await page.locator("#confirm-ok").click();
  await page.getByRole("status").getByText("Disconnected 2 sessions.").waitFor();
  assert.equal((await api("GET", "/v1/session", keep.token)).status, 200);
  for (const o of others) {
    const r = await api("GET", "/v1/session", o.token);
    assert.equal(r.status, 410);
    assert.equal(r.body.reason, "closed_all");
  }
  await page.getByRole("tab", { name: "History" }).click();
  const history = page.locator("#history tbody");
  await history.locator(`tr[data-id="${others[0].id}"]`).waitFor();
  const text = await history.innerText();
  assert.match(text, /closed_all\s+admin/);
  assert.match(text, /killed\s+admin/);
  await page.screenshot({ path: `${OUT}/history.png`, fullPage: true });
  await page.goto(BASE + "/admin");
  await page.getByRole("article", { name: "App gestan" }).locator("svg rect.opens").first().waitFor();
  await page.screenshot({ path: `${OUT}/overview.png`, fullPage: true });
  await page.close();
});

test("an app key sees only its app; the console works at phone width and from the keyboard", async () => {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  await page.goto(BASE + "/admin");
  await page.getByLabel("Admin token or app key").fill(KEY);
  await page.keyboard.press("Enter");
  await page.getByText("Signed in with the key of gestan").waitFor();
  await page.getByRole("article", { name: "App gestan" }).waitFor();
  assert.equal(await page.getByRole("article").count(), 1);
  await page.getByRole("button", { name: "Manage gestan" }).focus();
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Sessions of gestan" }).waitFor();
  await page.screenshot({ path: `${OUT}/sessions-phone.png`, fullPage: true });
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Admin token or app key").waitFor();
  await page.close();
});

test("log one user out everywhere from the sessions filtered to that user", async () => {
  const dana = [await open("dana", "dana-laptop"), await open("dana", "dana-phone")];
  const eve = await open("eve", "eve-pc");
  const page = await signedIn();
  await page.getByRole("button", { name: "Manage gestan" }).click();
  await page.locator(`tr[data-id="${eve.id}"]`).waitFor();
  assert.equal(await page.locator("#logout-user").isHidden(), true, "no user named, no button");
  await page.getByLabel("User", { exact: true }).fill("dana");
  const button = page.getByRole("button", { name: "Log dana out everywhere" });
  await button.waitFor();
  await button.click();
  await page.getByRole("dialog").waitFor();
  await page.screenshot({ path: `${OUT}/logout-user-confirm.png` });
  await page.locator("#confirm-ok").click();
  await page.getByRole("status").getByText("Logged dana out of 2 sessions.").waitFor();
  for (const s of dana) {
    const r = await api("GET", "/v1/session", s.token);
    assert.equal(r.status, 410);
    assert.equal(r.body.reason, "closed_all");
  }
  assert.equal((await api("GET", "/v1/session", eve.token)).status, 200, "another user stays");
  await api("DELETE", `/v1/sessions/${eve.id}`, KEY);
  await page.close();
});

test("a webhook's dead letters show with their error, and can be sent again", async () => {
  const shop = process.env.SHOP_KEY;
  const opened = await api("POST", "/v1/apps/shop/sessions", shop, { user: "hook-user" });
  assert.equal(opened.status, 201);
  // Nothing listens on port 9: the one try fails and the delivery is a dead letter.
  let dead = [];
  for (let i = 0; i < 50 && !dead.length; i++) {
    dead = (await api("GET", "/v1/apps/shop/hooks/deliveries?state=dead", ADMIN)).body.deliveries;
    if (!dead.length) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(dead.length, 1);
  const page = await signedIn();
  await page.getByRole("button", { name: "Manage shop" }).click();
  await page.getByRole("tab", { name: "Webhooks" }).click();
  const row = page.locator(`#deliveries tr[data-id="${dead[0].id}"]`);
  await row.waitFor();
  assert.match(await row.innerText(), /billing\s+opened/);
  assert.match(await row.locator("td.state").innerText(), /dead letter/);
  assert.match(await row.locator("td.error").innerText(), /could not connect/);
  assert.match(await page.locator("#hooks-summary").innerText(), /1 webhook \(billing → http:\/\/127\.0\.0\.1:9\/…\); 0 waiting, 1 dead letter\./);
  await page.screenshot({ path: `${OUT}/webhooks.png`, fullPage: true });
  await row.getByRole("button", { name: "Send opened to billing again" }).click();
  await page.locator("#hooks-status").getByText("The opened event is sent to billing again.").waitFor();
  const after = (await api("GET", "/v1/apps/shop/hooks/deliveries", ADMIN)).body.deliveries;
  assert.equal(after.length, 1, "the same delivery, tried again");
  assert.equal(after[0].event_id, dead[0].event_id);
  await page.close();
});

test("a seat whose beats stopped shows as away while its lease holds it", async () => {
  const key = process.env.FIELD_KEY;
  const opened = await api("POST", "/v1/apps/field/sessions", key, { user: "roaming", client: { label: "laptop" } });
  assert.equal(opened.status, 201);
  assert.equal(opened.body.heartbeat.lease_s, 60);
  const page = await signedIn();
  await page.getByRole("button", { name: "Manage field" }).click();
  const row = page.locator(`tr[data-id="${opened.body.id}"]`);
  await row.waitFor();
  // Interval 1 s + grace 1 s without a beat: away, and still open.
  await row.locator(".badge.away").waitFor({ state: "visible", timeout: 10000 });
  await page.screenshot({ path: `${OUT}/away.png` });
  assert.equal((await api("GET", `/v1/sessions/${opened.body.id}`, key)).body.status, "open");
  // Its own beat brings it back: same session, open.
  const beat = await api("POST", "/v1/session/heartbeat", opened.body.token);
  assert.equal(beat.status, 200);
  assert.equal(beat.body.status, "open");
  await page.close();
});
