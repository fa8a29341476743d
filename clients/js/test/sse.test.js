// The event-stream framing, byte by byte: whatever the chunks, the same events.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { MAX_EVENT_CHARS, Parser, StreamError } from '../src/sse.js';

const STREAM = new TextEncoder().encode(
  ': keep-alive\n\n' +
    'event: closed\r\n' +
    'data: {"id":"s1","reason":"killed","by":"app"}\r\n\r\n' +
    'id: 3f9a0c51d2e4b877-7\r' +
    'event: opened\r' +
    'data: first line — ü\r' +
    'data: second line\r\r' +
    'data: 42\n\n',
);
const EVENTS = [
  { event: 'closed', id: null, data: { id: 's1', reason: 'killed', by: 'app' } },
  { event: 'opened', id: '3f9a0c51d2e4b877-7', data: 'first line — ü\nsecond line' },
  { event: 'message', id: null, data: 42 },
];

function feedAll(parser, chunks) {
  return chunks.flatMap((c) => parser.feed(c));
}

test('one chunk', () => {
  assert.deepEqual(feedAll(new Parser(), [STREAM]), EVENTS);
});

test('every split point, even inside a character or between \\r and \\n, and byte by byte', () => {
  for (let cut = 0; cut <= STREAM.length; cut++) {
    assert.deepEqual(feedAll(new Parser(), [STREAM.subarray(0, cut), STREAM.subarray(cut)]), EVENTS, `cut ${cut}`);
  }
  const bytes = Array.from(STREAM, (_, i) => STREAM.subarray(i, i + 1));
  assert.deepEqual(feedAll(new Parser(), bytes), EVENTS);
});

test('the last event id stays across frames; a BOM is dropped; an id with NUL is ignored', () => {
  const parser = new Parser();
  assert.deepEqual(parser.feed(new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode('id: e-1\ndata: x\n\n')])), [
    { event: 'message', id: 'e-1', data: 'x' },
  ]);
  assert.equal(parser.lastEventId, 'e-1');
  assert.deepEqual(parser.feed('id: e-2\n\n'), []);
  assert.equal(parser.lastEventId, 'e-2');
  assert.deepEqual(parser.feed('data: y\n\n'), [{ event: 'message', id: null, data: 'y' }]);
  parser.feed('id: bad\0id\ndata: z\n\n');
  assert.equal(parser.lastEventId, 'e-2');
});

test('a bare data line is an empty data line; fields without a space', () => {
  assert.deepEqual(new Parser().feed('data\n\nevent:x\ndata:1\n\n'), [
    { event: 'message', id: null, data: '' },
    { event: 'x', id: null, data: 1 },
  ]);
});

test('a frame left unfinished is not dispatched', () => {
  assert.deepEqual(new Parser().feed('event: closed\ndata: {}\n'), []);
});

test('an oversized event is refused', () => {
  assert.throws(() => new Parser().feed('data: ' + 'x'.repeat(MAX_EVENT_CHARS + 1)), StreamError);
  const parser = new Parser();
  assert.throws(() => {
    for (let i = 0; i < MAX_EVENT_CHARS / 1000 + 2; i++) parser.feed('data: ' + 'x'.repeat(1000) + '\n');
  }, StreamError);
});
