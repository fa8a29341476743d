// What the module says and which code it ends with, without a server: the close reasons
// and their exit codes, the holders' table, the command line's flags, the URL rules and
// the API's error bodies.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { holdersText, parse, run, shortTime } from '../src/cli.js';
import { EXIT, MEANINGS, exitCodeFor } from '../src/exits.js';
import { Ended } from '../src/seat.js';
import { ApiError, SeatsExhausted, Server, apiError } from '../src/transport.js';
import { VERSION } from '../src/version.js';

// crates/sessiond/src/exit.rs, Exit::closed: the reason each code stands for.
const CONNECT_EXITS = {
  killed: 10, closed_all: 11, taken_over: 12, heartbeat_lost: 13, lease_expired: 13, idle_timeout: 14,
  absolute_timeout: 15, evicted: 16, replaced: 17, logout: 18, something_new: 19, unknown: 19,
  // Names of Object.prototype are reasons like any other unknown one.
  constructor: 19, ['__proto__']: 19,
};

test('every close reason ends with the code of connect', () => {
  for (const [reason, code] of Object.entries(CONNECT_EXITS)) {
    assert.equal(exitCodeFor(reason), code, reason);
    assert.equal(new Ended(reason, 'app').exitCode, code);
  }
  const codes = MEANINGS.map(([code]) => code);
  assert.equal(new Set(codes).size, 15);
});

test('what the user is told', () => {
  assert.equal(
    String(new Ended('taken_over', 'session:01a2')),
    'Disconnected: another client took this seat over (taken_over, by session:01a2).',
  );
  assert.equal(String(new Ended('killed')), 'Disconnected: an administrator closed this session (killed).');
  assert.equal(String(new Ended('brand_new', 'system')), 'Disconnected: the session was closed (brand_new, by system).');
  const forgotten = new Ended(null);
  assert.equal(forgotten.exitCode, EXIT.FAILED);
  assert.match(String(forgotten), /^Disconnected: the server no longer knows this session/);
});

const holder = (user, label, opened) => ({
  id: '0192f3c4-7a1e-7c2b-9d4e-5f6a7b8c9d0e', user,
  client: { label, ip: '10.0.0.7', user_agent: null },
  created_at: opened, last_activity_at: '2026-05-01T08:30:00.250Z', last_heartbeat_at: '2026-05-01T08:31:00.000Z',
});

test('holders are numbered from one in aligned columns (as connect.rs draws them)', () => {
  assert.equal(
    holdersText([holder('ann', 'pc-ann', '2026-05-01T08:00:00.000Z'), holder(null, null, '2026-04-30T23:59:59.999Z')]),
    '  [1]  ann      pc-ann  10.0.0.7  opened 2026-05-01 08:00:00Z  ' +
      'last activity 2026-05-01 08:30:00Z  last heartbeat 2026-05-01 08:31:00Z\n  ' +
      '[2]  (guest)  -       10.0.0.7  opened 2026-04-30 23:59:59Z  ' +
      'last activity 2026-05-01 08:30:00Z  last heartbeat 2026-05-01 08:31:00Z\n',
  );
  assert.equal(shortTime('not a time'), 'not a time');
  assert.equal(shortTime('2026-05-01T08:00:00+02:00'), '2026-05-01 08:00:00+02:00');
});

test('flags and their environment', () => {
  const env = { SESSIOND_SERVER: 'https://seats.example', SESSIOND_TOKEN: 'from-the-environment' };
  const args = parse(['--app', 'gestan', '--user', 'ann', '--heartbeat', '5', '--on-full', 'take-over-idlest'], env);
  assert.deepEqual(
    [args.server, args.token, args.heartbeat, args.onFull],
    ['https://seats.example', 'from-the-environment', 5, 'take-over-idlest'],
  );
  assert.equal(parse(['--app', 'a', '--user', 'u', '--token', 'flag'], env).token, 'flag');
  assert.equal(parse(['--app', 'a', '--user', 'u'], {}).server, 'http://127.0.0.1:7420');
});

test('bad flags exit 2', async () => {
  const bad = [
    [], ['--app', 'gestan'], ['--app', 'a', '--user', 'u', '--heartbeat', '-1'],
    ['--app', 'a', '--user', 'u', '--on-full', 'never'], ['--app', 'a', '--user', 'u', 'extra'],
    ['--app', 'a', '--user', 'u', '--take-over', '01a2'], ['--app', 'a', '--user', 'u', '--nope'],
  ];
  const write = process.stderr.write;
  process.stderr.write = () => true;
  try {
    for (const argv of bad) assert.equal(await run(argv), EXIT.USAGE, argv.join(' '));
  } finally {
    process.stderr.write = write;
  }
});

test('server URLs', () => {
  assert.equal(new Server('127.0.0.1:7420').url, 'http://127.0.0.1:7420');
  assert.equal(new Server('https://example.com/sessions/').url, 'https://example.com/sessions');
  assert.throws(() => new Server('https://me:hunter22@example.com'), (e) => !e.message.includes('hunter22'));
  for (const bad of ['ftp://example.com', 'http://example.com/?x=1', 'http://example.com/#f', 'http://example.com:99999']) {
    assert.throws(() => new Server(bad), undefined, bad);
  }
});

test('a CA file that is no certificate is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-js-ca-'));
  writeFileSync(join(dir, 'junk.pem'), 'not a certificate\n');
  assert.throws(() => new Server('https://example.com', { caCert: join(dir, 'junk.pem') }), /--ca-cert/);
  assert.throws(() => new Server('https://example.com', { caCert: join(dir, 'missing.pem') }), /--ca-cert/);
  assert.throws(() => new Server('http://example.com', { caCert: join(dir, 'junk.pem') }), /--ca-cert/);
});

test('API error bodies', () => {
  const full = apiError(409, JSON.stringify({
    error: 'seats_exhausted', message: 'all 2 seats are taken', seats: { used: 2, total: 2 },
    sessions: [
      { id: 'a', last_activity_at: '2026-05-01T08:00:01.000Z' },
      { id: 'b', last_activity_at: '2026-05-01T08:00:00.000Z' },
      { id: 'c', last_activity_at: '2026-05-01T08:00:00.000Z' },
    ],
  }));
  assert.ok(full instanceof SeatsExhausted);
  assert.deepEqual(full.seats, { used: 2, total: 2 });
  assert.equal(full.idlest().id, 'b');
  assert.equal(full.message, 'all 2 seats are taken (seats_exhausted)');
  const closed = apiError(410, '{"error":"session_closed","message":"closed","reason":"killed"}');
  assert.ok(closed instanceof ApiError && !(closed instanceof SeatsExhausted));
  assert.equal(closed.body.reason, 'killed');
  const proxy = apiError(502, '<html>' + 'x'.repeat(500));
  assert.equal(proxy.code, null);
  assert.match(proxy.message, /^the server answered HTTP 502 without an API error body: <html>/);
  assert.ok(proxy.message.length < 300);
});

test('package.json says the version the module reports', () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  assert.equal(pkg.version, VERSION);
});
