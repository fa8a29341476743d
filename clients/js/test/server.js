// A real `sessiond serve` for the module's tests, on a loopback port, from SESSIOND_BIN
// (scripts/test-clients sets it). Without it a test is skipped, or fails with CI=true.

import { spawn } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** How long any wait for something to happen may last: it only bounds a hang. */
export const BOUND_MS = 20000;

export const appKey = (app) => `${app}-app-key-test-0123456789`;
export const clientKey = (app) => `${app}-client-key-test-0123456789`;

/** Skips `t` (or fails it with CI=true) when there is no server binary to run. */
export function needServer(t) {
  if (process.env.SESSIOND_BIN) return true;
  const why = 'SESSIOND_BIN is not set (scripts/test-clients sets it)';
  if (process.env.CI === 'true') throw new Error(`CI=true: every test must run, but ${why}`);
  if (process.env.SESSIOND_SKIPPED_LOG) appendFileSync(process.env.SESSIOND_SKIPPED_LOG, `JS seat client tests: ${why}\n`);
  t.skip(why);
  return false;
}

function toml(apps) {
  const lines = ['admin_token = "clients-admin-token-0123456789abcdef"', 'expiry_interval_ms = 100'];
  for (const [app, policy] of Object.entries(apps)) {
    lines.push('', `[apps.${app}]`, `key = "${appKey(app)}"`, `client_key = "${clientKey(app)}"`);
    for (const [k, v] of Object.entries(policy)) {
      const value =
        typeof v === 'object'
          ? `{ ${Object.entries(v).map(([a, b]) => `${a} = ${b}`).join(', ')} }`
          : String(v);
      lines.push(`${k} = ${value}`);
    }
  }
  return lines.join('\n') + '\n';
}

// Every server started, killed when the test process ends however it ends.
const running = new Set();
process.on('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

/** A server of its own; `remove()` it in the test's `after`. */
export class Sessiond {
  constructor(apps, { store = 'memory:' } = {}) {
    this.dir = mkdtempSync(join(tmpdir(), 'sessiond-js-'));
    this.config = join(this.dir, 'sessiond.toml');
    writeFileSync(this.config, toml(apps));
    this.store = store;
    this.port = 0;
    this.proc = null;
    this.runs = 0;
  }

  async start() {
    const log = join(this.dir, `server-${this.runs++}.log`);
    const args = ['serve', '--config', this.config, '--listen', `127.0.0.1:${this.port}`,
      '--store', this.store, '--data-dir', join(this.dir, 'data')];
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SESSIOND_')));
    writeFileSync(log, '');
    this.proc = spawn(process.env.SESSIOND_BIN, args, { env: { ...env, SESSIOND_LOG: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const proc = this.proc;
    running.add(proc);
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    exited.then(() => running.delete(proc));
    this.exited = exited;
    let text = '';
    const port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the server did not start:\n${text}`)), BOUND_MS);
      const read = (chunk) => {
        text += chunk;
        appendFileSync(log, chunk);
        const found = /listen=127\.0\.0\.1:(\d+)/.exec(text);
        if (found) {
          clearTimeout(timer);
          resolve(Number(found[1]));
        }
      };
      this.proc.stdout.on('data', read);
      this.proc.stderr.on('data', read);
      exited.then(() => reject(new Error(`the server ended:\n${text}`)));
    });
    this.port = port;
    return this;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** SIGTERM (every change flushed), and wait for the end. */
  async stop() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), BOUND_MS);
      await this.exited;
      clearTimeout(timer);
    }
  }

  async restart() {
    await this.stop();
    return this.start();
  }

  /** Stops the server and removes its files. */
  async remove() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** One API call with `credential`: `{status, body}`. */
  call(method, path, credential, body) {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const headers = { authorization: `Bearer ${credential}` };
      if (payload !== undefined) headers['content-type'] = 'application/json';
      const req = request(`${this.url}${path}`, { method, headers, timeout: BOUND_MS }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode, body: text ? JSON.parse(text) : null }));
      });
      req.on('error', reject);
      req.end(payload);
    });
  }

  log() {
    return readFileSync(join(this.dir, `server-${this.runs - 1}.log`), 'utf8');
  }
}
