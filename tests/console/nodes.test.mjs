// Browser tests of console sign-ins kept in the store: a sign-in survives a server
// restart, and a sign-in on one node works on another node of the same Redis store.
// Run with: tests/console/run.sh (it builds the server and sets SESSIOND_BIN,
// REDIS_URL and REDIS_NAMESPACE). These tests start their own servers.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const BIN = process.env.SESSIOND_BIN;
const OUT = process.env.ARTIFACTS || "artifacts/console";
const REDIS = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const NAMESPACE = process.env.REDIS_NAMESPACE || `sessiond_console_${process.pid}_${Date.now()}`;
const ADMIN = "console-nodes-admin-token-01";
const KEY = "gestan-console-nodes-key-001";

let browser;
const dirs = [];
const running = new Set();

before(async () => {
  assert.ok(BIN, "SESSIOND_BIN names the sessiond binary (tests/console/run.sh sets it)");
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
  for (const s of running) await s.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function dataDir() {
  const d = mkdtempSync(path.join(tmpdir(), "sessiond-console-nodes-"));
  dirs.push(d);
  return d;
}

function config(store) {
  return `admin_token = "${ADMIN}"
store = "${store}"
expiry_interval_ms = 200
[apps.gestan]
key = "${KEY}"
seats = 5
`;
}

// Starts `sessiond serve` on `listen` (a free port by default) over `dir` and `store`;
// resolves once it logs its address.
function startServer(dir, store, listen = "127.0.0.1:0") {
  const file = path.join(dir, "sessiond.toml");
  writeFileSync(file, config(store));
  const child = spawn(BIN, ["serve", "--config", file, "--listen", listen, "--data-dir", dir], {
    env: { ...process.env, SESSIOND_LOG: "info" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start:\n${log}`)), 30000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code}):\n${log}`));
    });
    child.stderr.on("data", (chunk) => {
      // Keep reading (a full pipe would stall the server), keep only the tail.
      log = (log + chunk).slice(-20000);
      const m = log.match(/listen=127\.0\.0\.1:(\d+)/);
      if (m && !child.started) {
        child.started = true;
        clearTimeout(timer);
        const server = {
          port: Number(m[1]),
          url: `http://127.0.0.1:${m[1]}`,
          stop: () => new Promise((done) => {
            running.delete(server);
            if (child.exitCode !== null) return done();
            child.once("exit", () => done());
            child.kill("SIGTERM");
          }),
        };
        running.add(server);
        resolve(server);
      }
    });
  });
}

async function api(base, method, p, token, body) {
  const r = await fetch(base + p, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

async function signIn(page, base) {
  await page.goto(base + "/admin");
  await page.getByLabel("Admin token or app key").fill(ADMIN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Apps" }).waitFor();
}

function redisListens() {
  const u = new URL(REDIS);
  return new Promise((resolve) => {
    const s = connect(Number(u.port || 6379), u.hostname);
    s.once("connect", () => { s.destroy(); resolve(true); });
    s.once("error", () => resolve(false));
  });
}

test("a sign-in survives a server restart", async () => {
  const dir = dataDir();
  let server = await startServer(dir, "file:");
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await signIn(page, server.url);
  await page.getByRole("article", { name: "App gestan" }).waitFor();

  const port = server.port;
  await server.stop();
  server = await startServer(dir, "file:", `127.0.0.1:${port}`);

  await page.reload();
  await page.getByRole("heading", { name: "Apps" }).waitFor();
  assert.equal(await page.getByLabel("Admin token or app key").count(), 0, "no sign-in form after the restart");
  await page.getByText("Signed in with the admin token").waitFor();
  const s = (await api(server.url, "POST", "/v1/apps/gestan/sessions", KEY, { user: "after-restart", client: { label: "pc-r" } })).body;
  await page.getByRole("button", { name: "Manage gestan" }).click();
  await page.locator(`tr[data-id="${s.id}"]`).waitFor({ timeout: 5000 });
  await page.screenshot({ path: `${OUT}/signed-in-after-restart.png`, fullPage: true });
  await page.close();
  await server.stop();
});

test("a sign-in on node 1 works on node 2 of the same Redis store", async (t) => {
  if (!(await redisListens())) {
    assert.notEqual(process.env.CI, "true", `Redis must be running in CI (${REDIS})`);
    t.skip(`nothing listens at ${REDIS}`);
    return;
  }
  const store = `${REDIS}?namespace=${NAMESPACE}`;
  const one = await startServer(dataDir(), store);
  const two = await startServer(dataDir(), store);
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await signIn(page, one.url);

  // Node 2 has never seen this browser sign in; the store has.
  await page.goto(two.url + "/admin");
  await page.getByRole("heading", { name: "Apps" }).waitFor();
  assert.equal(await page.getByLabel("Admin token or app key").count(), 0, "signed in on node 2");
  await page.getByRole("button", { name: "Manage gestan" }).click();
  await page.getByRole("heading", { name: "Sessions of gestan" }).waitFor();

  // A session opened on node 1 appears live on node 2's console, which disconnects it.
  const s = (await api(one.url, "POST", "/v1/apps/gestan/sessions", KEY, { user: "node-ann", client: { label: "pc-n1" } })).body;
  const row = page.locator(`tr[data-id="${s.id}"]`);
  await row.waitFor({ timeout: 5000 });
  await page.screenshot({ path: `${OUT}/node-2-console.png`, fullPage: true });
  await row.getByRole("button", { name: /Disconnect node-ann/ }).click();
  await page.getByRole("dialog").waitFor();
  await page.locator("#confirm-ok").click();
  await row.waitFor({ state: "detached", timeout: 5000 });
  const r = await api(one.url, "GET", "/v1/session", s.token);
  assert.equal(r.status, 410);
  assert.equal(r.body.reason, "killed");

  // Signing out on node 2 signs out on node 1.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Admin token or app key").waitFor();
  await page.goto(one.url + "/admin");
  await page.getByLabel("Admin token or app key").waitFor();
  await page.close();
  await one.stop();
  await two.stop();
});
