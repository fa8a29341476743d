// The event-stream framing (Server-Sent Events, the WHATWG rules): `event:`, `data:` and
// `id:` lines, comments, a blank line to dispatch, any of `\n`, `\r\n` or `\r` to end a
// line even when a chunk ends between the two bytes of `\r\n`. It is fed the bytes of a
// connection as they come and hands out complete events.
//
// The seat only reads its session's stream, whose frames carry no `id:`; the last event
// id is kept anyway, as the rules say, so that the parser also serves an app stream
// (where a reconnection sends it back as `Last-Event-ID` and may get `resync`).

/** Longest line, and longest event data, accepted: only stops a broken peer. */
export const MAX_EVENT_CHARS = 1 << 20;

/** The stream sent something no sessiond server sends (an event over the limit). */
export class StreamError extends Error {
  constructor(message) {
    super(message);
    this.name = 'StreamError';
  }
}

/** Turns the bytes of one connection into events; see `feed`. */
export class Parser {
  #decoder = new TextDecoder('utf-8'); // drops a leading BOM by itself
  #line = '';
  #afterCr = false;
  #event = null;
  #data = [];
  #dataChars = 0;
  #id = null;
  #idBuffer;

  /** @param {string} lastEventId the id to resume from, if any */
  constructor(lastEventId = '') {
    this.#idBuffer = lastEventId;
    /** The id a reconnection sends back (the last `id:` of a complete frame). */
    this.lastEventId = lastEventId;
  }

  /**
   * Reads `chunk` (a Uint8Array, or a string already decoded) and returns the events it
   * completed, in order: `{event, id, data}`, `data` parsed as JSON (the text when not).
   */
  feed(chunk) {
    let text = typeof chunk === 'string' ? chunk : this.#decoder.decode(chunk, { stream: true });
    const events = [];
    if (this.#afterCr) {
      this.#afterCr = false;
      if (text.startsWith('\n')) text = text.slice(1);
    }
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.#line += text.slice(start, i);
      this.#checkSize();
      const line = this.#line;
      this.#line = '';
      const event = this.#lineDone(line);
      if (event) events.push(event);
      if (c === 13) {
        if (i + 1 < text.length) {
          if (text.charCodeAt(i + 1) === 10) i++;
        } else {
          this.#afterCr = true;
        }
      }
      start = i + 1;
    }
    this.#line += text.slice(start);
    this.#checkSize();
    return events;
  }

  #checkSize() {
    if (this.#line.length > MAX_EVENT_CHARS || this.#dataChars > MAX_EVENT_CHARS) {
      throw new StreamError(`an event is over ${MAX_EVENT_CHARS} characters`);
    }
  }

  #lineDone(line) {
    if (line === '') return this.#dispatch();
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') {
      this.#event = value;
    } else if (field === 'data') {
      this.#data.push(value);
      this.#dataChars += value.length + 1;
      this.#checkSize();
    } else if (field === 'id') {
      if (!value.includes('\0')) {
        this.#id = value;
        this.#idBuffer = value;
      }
    }
    // `retry:` and unknown fields are ignored: the reconnection delay is the client's
    // own (with backoff), whatever the server suggests.
    return null;
  }

  #dispatch() {
    this.lastEventId = this.#idBuffer;
    const type = this.#event;
    const id = this.#id;
    const data = this.#data;
    this.#event = null;
    this.#id = null;
    this.#data = [];
    this.#dataChars = 0;
    if (data.length === 0) return null;
    const text = data.join('\n');
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      value = text;
    }
    return { event: type || 'message', id, data: value };
  }
}
