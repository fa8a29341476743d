// A seat: a session opened with an app's client credential and kept alive.
//
// SeatClient opens it (`POST /v1/apps/{app}/sessions`); a full house rejects with
// SeatsExhausted and the holders, and opening again with `takeOver` takes one of their
// seats. Seat then acts with the session's own token: a loop heartbeats at the interval
// the server gives, another listens to the session's event stream (reconnecting when it
// drops, as across a server restart), and whichever first learns that the session closed
// settles `seat.ended` with an Ended that says why, in words and as the exit code
// `sessiond connect` would use.

import { EXIT, exitCodeFor, explain } from './exits.js';
import { Parser, StreamError } from './sse.js';
import { ApiError, SeatError, Server, TransportError } from './transport.js';

/** The heartbeat interval when the session has none (as `sessiond connect`). */
export const DEFAULT_INTERVAL_S = 30;
// Reconnection of the event stream: the first wait, doubling after each failed attempt
// up to the longest, each drawn between half and all of it (as sessiond-client).
const RECONNECT_INITIAL_MS = 250;
const RECONNECT_MAX_MS = 30000;
/** A stream silent this long (the server sends a keep-alive every 15 s) is replaced. */
export const STREAM_IDLE_TIMEOUT_MS = 45000;

/**
 * How a seat ended. `reason` is the close reason the server gave (`killed`,
 * `taken_over`...), or null when the server no longer knows the session at all (its
 * token is refused: a server restarted without keeping its sessions, or the token was
 * replaced). `by` is who closed it (`app`, `expiry`, `session:<id>`...) when known.
 * `exitCode` is the code `sessiond connect` exits with; `toString()` the sentence it
 * prints.
 */
export class Ended {
  constructor(reason, by = null) {
    this.reason = reason;
    this.by = by ?? null;
    if (reason === null) {
      this.exitCode = EXIT.FAILED;
      this.explanation =
        "the server no longer knows this session (it restarted without keeping its sessions, or the session's token was replaced); start again to take a seat";
    } else {
      this.exitCode = exitCodeFor(reason);
      this.explanation = explain(reason);
    }
  }

  toString() {
    if (this.reason === null) return `Disconnected: ${this.explanation}.`;
    const by = this.by ? `, by ${this.by}` : '';
    return `Disconnected: ${this.explanation} (${this.reason}${by}).`;
  }
}

/** The wait before reconnection attempt `failures + 1`, jittered, in ms. */
export function reconnectDelay(failures) {
  const full = Math.min(RECONNECT_INITIAL_MS * 2 ** Math.min(failures, 16), RECONNECT_MAX_MS);
  return full / 2 + Math.random() * (full / 2);
}

/** Whether a refused stream may be had by trying again (5xx, 408, 429). */
export function retryable(status) {
  return status >= 500 || status === 408 || status === 429;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Opens seats in a server's apps with an app's client credential (`client_key`).
 * `credential` may also be the app key or the admin token (what `sessiond connect
 * --token` accepts), but a program installed on users' machines should carry the client
 * credential only: it can take a seat and nothing else.
 */
export class SeatClient {
  #credential;

  /**
   * @param {string|Server} server the server's URL
   * @param {{credential?: string, caCert?: string, timeoutMs?: number, userAgent?: string}} options
   */
  constructor(server, { credential, caCert, timeoutMs = 30000, userAgent } = {}) {
    this.server = server instanceof Server ? server : new Server(server, { caCert });
    this.#credential = credential ?? null;
    this.timeoutMs = timeoutMs;
    this.userAgent = userAgent ?? null;
  }

  /**
   * Opens a seat in `app` for `user`; resolves to a Seat, not yet started. `label` names
   * this client; `heartbeat` asks for an interval in seconds instead of the app's;
   * `takeOver` is the id of an open session whose seat to take (it closes as
   * `taken_over`). Rejects with SeatsExhausted on a full house, another ApiError when
   * refused (`user_limit`, `take_over_target`, a license...), TransportError when the
   * server cannot be reached.
   */
  async open(app, user, { label, heartbeat, takeOver } = {}) {
    const body = { user };
    const client = {};
    if (label != null) client.label = label;
    if (this.userAgent != null) client.user_agent = this.userAgent;
    if (Object.keys(client).length > 0) body.client = client;
    if (heartbeat != null) body.heartbeat = { interval_s: heartbeat };
    if (takeOver != null) body.take_over = takeOver;
    const opened = await this.server.call('POST', `/v1/apps/${encodeURIComponent(app)}/sessions`, {
      credential: this.#credential,
      body,
      timeoutMs: this.timeoutMs,
    });
    const { token, ...session } = opened;
    if (typeof token !== 'string' || token === '') {
      throw new SeatError("the server's answer to an open carries no token");
    }
    return new Seat(this.server, session, token, { timeoutMs: this.timeoutMs });
  }
}

/**
 * An open seat, acting with its own token (a private field: never shown by
 * `console.log` or in messages). `start()` begins heartbeating and listening, `ended`
 * settles when the session is closed, `logout()` gives the seat back, `stop()` stops
 * without giving it back (it then frees itself after the heartbeat interval and grace).
 */
export class Seat {
  #token;
  #stop = new AbortController();
  #settle;
  #warn = () => {};
  #started = false;

  constructor(server, session, token, { timeoutMs = 30000 } = {}) {
    this.server = server;
    this.session = session;
    this.timeoutMs = timeoutMs;
    this.#token = token;
    this.interval = Math.max(Number(session.heartbeat?.interval_s) || DEFAULT_INTERVAL_S, 1);
    /** @type {Promise<Ended|null>} how the seat ended; null once stopped by `stop()`. */
    this.ended = new Promise((resolve) => (this.#settle = resolve));
  }

  /** The session id. */
  get id() {
    return this.session.id;
  }

  /** Starts the heartbeat and the event stream; `onWarning(text)` hears retried failures. */
  start({ onWarning } = {}) {
    if (this.#started) return this;
    this.#started = true;
    if (onWarning) this.#warn = onWarning;
    this.#beat().catch((e) => this.#warn(`heartbeat stopped: ${e.message}`));
    this.#listen().catch((e) => this.#warn(`event stream stopped: ${e.message}`));
    return this;
  }

  /** `POST /v1/session/heartbeat` once: `{status, next_heartbeat_s}`. */
  heartbeat() {
    return this.#call('POST', '/v1/session/heartbeat');
  }

  /** `GET /v1/session?touch=false`: the session as the server has it (not activity). */
  read() {
    return this.#call('GET', '/v1/session?touch=false');
  }

  /** `DELETE /v1/session`: gives the seat back (closed as `logout`) and stops. */
  logout() {
    this.stop();
    return this.#call('DELETE', '/v1/session');
  }

  /** Stops heartbeating and listening (`ended` settles with null if still open). */
  stop() {
    this.#stop.abort();
    this.#settle(null);
  }

  #call(method, path) {
    return this.server.call(method, path, { credential: this.#token, timeoutMs: this.timeoutMs });
  }

  #end(ended) {
    if (this.#stop.signal.aborted) return;
    this.#settle(ended);
    this.#stop.abort();
  }

  async #beat() {
    const stop = this.#stop.signal;
    let interval = this.interval;
    let due = Date.now() + interval * 1000;
    for (;;) {
      await sleep(Math.max(due - Date.now(), 0), stop);
      if (stop.aborted) return;
      try {
        const ack = await this.heartbeat();
        const following = ack.next_heartbeat_s;
        if (Number.isInteger(following) && following > 0 && following !== interval) {
          interval = following;
          due = Date.now();
        }
      } catch (e) {
        if (stop.aborted) return;
        if (e instanceof ApiError && e.code === 'session_closed') {
          this.#end(new Ended(e.body.reason || 'unknown', e.body.closed_by));
          return;
        }
        if (e instanceof ApiError && e.code === 'invalid_token') {
          // The token matches no session: retrying cannot bring it back.
          this.#end(new Ended(null));
          return;
        }
        this.#warn(`heartbeat failed (will retry): ${e.message}`);
      }
      // Beats keep their rhythm; one that came late is not made up twice.
      due = Math.max(due + interval * 1000, Date.now());
    }
  }

  async #listen() {
    const stop = this.#stop.signal;
    let failures = 0;
    while (!stop.aborted) {
      const conn = new AbortController();
      const onStop = () => conn.abort();
      stop.addEventListener('abort', onStop, { once: true });
      try {
        const stream = await this.server.openStream('/v1/session/events', {
          credential: this.#token,
          signal: conn.signal,
        });
        failures = 0;
        if (await this.#read(stream, conn)) return;
      } catch (e) {
        if (e instanceof ApiError && !retryable(e.status)) {
          // Refused for good (the token no longer works): the heartbeat finds out why.
          return;
        }
        if (!(e instanceof ApiError || e instanceof TransportError)) throw e;
        failures++;
      } finally {
        stop.removeEventListener('abort', onStop);
        conn.abort();
      }
      await sleep(reconnectDelay(failures), stop);
    }
  }

  /** Reads one connection of the stream; true when the stream is over. */
  async #read(stream, conn) {
    const parser = new Parser();
    let silence = setTimeout(() => conn.abort(), STREAM_IDLE_TIMEOUT_MS);
    try {
      for await (const chunk of stream.chunks) {
        clearTimeout(silence);
        silence = setTimeout(() => conn.abort(), STREAM_IDLE_TIMEOUT_MS);
        for (const event of parser.feed(chunk)) {
          if (event.event === 'closed') {
            const data = event.data && typeof event.data === 'object' ? event.data : {};
            this.#end(new Ended(data.reason || 'unknown', data.by));
            return true;
          }
          // The token was replaced; the old one stops working.
          if (event.event === 'privileges_changed') return true;
        }
      }
      return false;
    } catch (e) {
      // Not a sessiond stream: the heartbeat still tells when the session closes.
      if (e instanceof StreamError) return true;
      return false;
    } finally {
      clearTimeout(silence);
    }
  }
}
