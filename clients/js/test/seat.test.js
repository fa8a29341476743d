// The module against a real server: what a program embedding it sees (the command
// line's behaviour is the scenarios' business, clients/scenarios).
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { test } from 'node:test';

import { ApiError, SeatClient, SeatsExhausted, TransportError } from '../src/index.js';
import { BOUND_MS, Sessiond, appKey, clientKey, needServer } from './server.js';

const APPS = {
  gestan: { seats: 1, heartbeat: { interval_s: 1, grace_s: 2 } },
  // A heartbeat far apart, so that what arrives sooner came by the event stream.
  slow: { seats: 2, heartbeat: { interval_s: 60, grace_s: 60 } },
};

/** A server for test `t`, removed after it. */
async function server(t, options) {
  const s = new Sessiond(APPS, options);
  t.after(() => s.remove());
  return s.start();
}

/** `seat.ended`, or a failure after the bound. */
function ended(seat) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`seat ${seat.id} did not end within ${BOUND_MS} ms`)), BOUND_MS);
  });
  return Promise.race([seat.ended, late]).finally(() => clearTimeout(timer));
}

test('open, heartbeat, logout', async (t) => {
  if (!needServer(t)) return;
  const s = await server(t);
  const client = new SeatClient(s.url, { credential: clientKey('gestan') });
  const seat = await client.open('gestan', 'ann', { label: 'pc-ann', heartbeat: 2 });
  assert.equal(seat.interval, 2);
  assert.equal(seat.session.user, 'ann');
  assert.equal(seat.session.client.label, 'pc-ann');
  assert.deepEqual(await seat.heartbeat(), { status: 'open', next_heartbeat_s: 2 });
  assert.equal((await seat.read()).status, 'open');
  const closed = await seat.logout();
  assert.deepEqual([closed.status, closed.reason], ['closed', 'logout']);
  assert.equal(await seat.ended, null);
  await assert.rejects(seat.heartbeat(), (e) => e instanceof ApiError && e.status === 410 && e.body.reason === 'logout');
});

test('no token in what a program may print', async (t) => {
  if (!needServer(t)) return;
  const s = await server(t);
  const client = new SeatClient(s.url, { credential: clientKey('gestan') });
  const seat = await client.open('gestan', 'ann');
  const shown = inspect(seat, { depth: 5 }) + inspect(client, { depth: 5 }) + JSON.stringify(seat.session);
  assert.doesNotMatch(shown, /gestan:[0-9a-f]{32}/);
  assert.ok(!shown.includes(clientKey('gestan')));
  await seat.logout();
});

test('a full house lists the holders; a take-over ends the holder', async (t) => {
  if (!needServer(t)) return;
  const s = await server(t);
  const client = new SeatClient(s.url, { credential: clientKey('gestan') });
  const ann = (await client.open('gestan', 'ann', { label: 'pc-ann' })).start();
  let full;
  await assert.rejects(client.open('gestan', 'bob'), (e) => (full = e) instanceof SeatsExhausted);
  assert.deepEqual(full.holders.map((h) => [h.id, h.user, h.client.label, h.client.ip]), [[ann.id, 'ann', 'pc-ann', null]]);
  assert.deepEqual(full.seats, { used: 1, total: 1 });
  const bob = await client.open('gestan', 'bob', { takeOver: full.idlest().id });
  const end = await ended(ann);
  assert.deepEqual([end.reason, end.by, end.exitCode], ['taken_over', `session:${bob.id}`, 12]);
  await assert.rejects(client.open('gestan', 'cid', { takeOver: ann.id }), (e) => e.code === 'take_over_target');
  await bob.logout();
});

test('the close comes by the event stream', async (t) => {
  if (!needServer(t)) return;
  const s = await server(t);
  const seat = (await new SeatClient(s.url, { credential: clientKey('slow') }).open('slow', 'ann')).start();
  assert.equal(seat.interval, 60);
  assert.equal((await s.call('DELETE', `/v1/sessions/${seat.id}`, appKey('slow'))).status, 200);
  // Long before the first heartbeat is due.
  const end = await ended(seat);
  assert.deepEqual([end.reason, end.by, end.exitCode], ['killed', 'app', 10]);
});

test('the event stream comes back after a server restart', async (t) => {
  if (!needServer(t)) return;
  const s = await server(t, { store: 'file:' });
  const seat = (await new SeatClient(s.url, { credential: clientKey('slow') }).open('slow', 'ann')).start();
  await s.restart();
  assert.equal((await s.call('POST', '/v1/apps/slow/sessions/close-all', appKey('slow'), {})).status, 200);
  const end = await ended(seat);
  assert.deepEqual([end.reason, end.exitCode], ['closed_all', 11]);
});

test('a server that forgot the session ends the seat', async (t) => {
  if (!needServer(t)) return;
  const s = await server(t);
  const seat = (await new SeatClient(s.url, { credential: clientKey('gestan') }).open('gestan', 'ann')).start();
  await s.restart();
  const end = await ended(seat);
  assert.deepEqual([end.reason, end.exitCode], [null, 1]);
});

test('refusals', async (t) => {
  if (!needServer(t)) return;
  const s = await server(t);
  await assert.rejects(
    new SeatClient(s.url, { credential: 'wrong-credential-0123456789' }).open('gestan', 'ann'),
    (e) => e instanceof ApiError && e.status === 401 && e.code === 'unauthorized',
  );
  await s.stop();
  await assert.rejects(
    new SeatClient(s.url, { credential: clientKey('gestan') }).open('gestan', 'ann'),
    (e) => e instanceof TransportError && /cannot talk to the sessiond server/.test(e.message),
  );
});
