// Talking to a sessiond server: JSON requests, the API's error bodies turned into
// ApiError, and event streams opened for reading.
//
// Requests go through the global `fetch` (Node 18+). Node's fetch cannot be given a CA
// certificate per request without the `undici` package (its `Agent` is not exposed by
// Node), and this module has no dependencies; so when a CA file is given, requests go
// through `node:https` instead, with that file's certificates trusted besides Node's
// own roots (`tls.rootCertificates`). Both paths return the same shapes, so the rest of
// the module does not know which one ran.
//
// Credentials travel as `Authorization: Bearer` and nowhere else: a server URL with a
// user name or password is refused, and no message built here quotes a header.

import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import * as tls from 'node:tls';
import { X509Certificate } from 'node:crypto';

import { VERSION } from './version.js';

export const USER_AGENT = `sessiond-seat-js/${VERSION}`;
const BODY_SNIPPET_CHARS = 200;

/** Any failure of a call to the server. */
export class SeatError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SeatError';
  }
}

/** The request could not be sent or its answer not received. */
export class TransportError extends SeatError {
  constructor(cause) {
    super(`cannot talk to the sessiond server: ${cause}`);
    this.name = 'TransportError';
  }
}

/**
 * The server refused the call: `status`, the API's error `code` (null without an API
 * error body, e.g. from a proxy), its `message`, and the whole `body` with its extra
 * fields (`reason`, `seats`, `sessions`...).
 */
export class ApiError extends SeatError {
  constructor(status, code, message, body) {
    super(code ? `${message} (${code})` : message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.apiMessage = message;
    this.body = body;
  }
}

/**
 * 409 `seats_exhausted`: every seat is taken. `seats` is `{used, total}` (`total` null
 * when unlimited), `holders` the open sessions holding them; open again with `takeOver`
 * set to one of their ids to take its seat.
 */
export class SeatsExhausted extends ApiError {
  constructor(status, code, message, body) {
    super(status, code, message, body);
    this.name = 'SeatsExhausted';
    this.seats = body.seats ?? {};
    this.holders = Array.isArray(body.sessions) ? body.sessions : [];
  }

  /** The holder idle the longest (earliest `last_activity_at`), or null. */
  idlest() {
    let best = null;
    for (const s of this.holders) {
      if (best === null || (s.last_activity_at ?? '') < (best.last_activity_at ?? '')) best = s;
    }
    return best;
  }
}

/** The error of an answer with `status` and body text `raw`. */
export function apiError(status, raw) {
  let body = null;
  try {
    body = JSON.parse(raw);
  } catch {
    body = null;
  }
  if (body && typeof body === 'object' && typeof body.error === 'string') {
    const Kind = body.error === 'seats_exhausted' ? SeatsExhausted : ApiError;
    return new Kind(status, body.error, String(body.message ?? ''), body);
  }
  const snippet = raw.slice(0, BODY_SNIPPET_CHARS);
  return new ApiError(status, null, `the server answered HTTP ${status} without an API error body: ${snippet}`, {});
}

/** A transport failure in words (fetch hides the cause one level down). */
export function describe(error) {
  if (error?.name === 'TimeoutError') return error.message;
  const cause = error?.cause ?? error;
  const text = cause?.message || error?.message || String(error);
  return cause?.code && !text.includes(cause.code) ? `${text} (${cause.code})` : text;
}

class Timeout extends Error {
  constructor(ms) {
    super(`no answer within ${ms / 1000} s`);
    this.name = 'TimeoutError';
  }
}

/** The certificates of a PEM file, checked (a file without one is refused). */
function readCa(path) {
  let text;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new SeatError(`cannot read --ca-cert ${path}: ${e.message}`);
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new SeatError(`--ca-cert ${path}: no PEM certificate found`);
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch (e) {
      throw new SeatError(`--ca-cert ${path}: not a PEM certificate: ${e.message}`);
    }
  }
  return blocks;
}

/**
 * The address of a sessiond server and how to reach it. `url` is its base URL (with a
 * path prefix behind a proxy); an address without a scheme (`127.0.0.1:7420`) is taken
 * as http. `caCert`: a PEM file whose certificates are trusted besides Node's roots.
 */
export class Server {
  #ca = null;

  constructor(url, { caCert } = {}) {
    let text = String(url).trim();
    if (!text.includes('://')) text = `http://${text}`;
    let parsed;
    try {
      parsed = new URL(text);
    } catch {
      throw new SeatError(`invalid server URL: ${text.replace(/\/\/[^/@]*@/, '//')}`);
    }
    // First, so that the messages below, which quote the URL, never quote a password.
    if (parsed.username || parsed.password) {
      throw new SeatError('the server URL must not carry a user name or password; pass the credential instead');
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new SeatError(`${text}: the scheme must be http or https`);
    }
    if (parsed.search || parsed.hash) {
      throw new SeatError(`${text}: give the server's address without query or fragment`);
    }
    this.url = `${parsed.protocol}//${parsed.host}${parsed.pathname.replace(/\/+$/, '')}`;
    // Read for an http:// URL too, so that a CA file that cannot be used is refused
    // whatever the URL (as `sessiond connect` does).
    const ca = caCert == null ? null : readCa(caCert);
    if (ca !== null && parsed.protocol === 'https:') this.#ca = [...tls.rootCertificates, ...ca];
  }

  /**
   * Sends one request; resolves to the answer's JSON, rejects with ApiError when refused
   * (any status from 300 up: redirects are not followed, as a credential must not be),
   * TransportError when the server cannot be reached or is silent for `timeoutMs`.
   */
  async call(method, path, { credential, body, timeoutMs = 30000, signal } = {}) {
    const headers = this.#headers(credential, 'application/json');
    let payload;
    if (body !== undefined) {
      payload = JSON.stringify(body);
      headers['content-type'] = 'application/json';
    }
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(new Timeout(timeoutMs)), timeoutMs);
    const onAbort = () => ctl.abort(signal.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    let status;
    let raw;
    try {
      const answer = await this.#send(method, path, headers, payload, ctl.signal);
      status = answer.status;
      raw = await answer.text();
    } catch (e) {
      throw new TransportError(describe(ctl.signal.aborted ? ctl.signal.reason : e));
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
    if (status >= 300) throw apiError(status, raw);
    if (raw === '') return {};
    try {
      return JSON.parse(raw);
    } catch {
      throw new SeatError(`the server's answer to ${method} ${path} is not JSON`);
    }
  }

  /**
   * Opens an event stream; resolves once the server answered 200, to `{chunks}` (an
   * async iterable of Uint8Array that ends when the connection does). Aborting `signal`
   * closes it. Rejects as `call` does.
   */
  async openStream(path, { credential, signal } = {}) {
    const headers = this.#headers(credential, 'text/event-stream');
    let answer;
    try {
      answer = await this.#send('GET', path, headers, undefined, signal);
    } catch (e) {
      throw new TransportError(describe(signal?.aborted ? signal.reason : e));
    }
    if (answer.status !== 200) {
      let raw = '';
      try {
        raw = await answer.text();
      } catch {
        // The status says enough.
      }
      throw apiError(answer.status, raw);
    }
    return { chunks: answer.chunks };
  }

  #headers(credential, accept) {
    const headers = { accept, 'user-agent': USER_AGENT };
    if (credential) headers.authorization = `Bearer ${credential}`;
    return headers;
  }

  /** One exchange: `{status, text(), chunks}`, by fetch or, with a CA file, node:https. */
  async #send(method, path, headers, body, signal) {
    const url = this.url + path;
    if (this.#ca === null) {
      const res = await fetch(url, { method, headers, body, signal, redirect: 'manual' });
      return { status: res.status, text: () => res.text(), chunks: res.body ?? [] };
    }
    return new Promise((resolve, reject) => {
      const req = https.request(url, { method, headers, ca: this.#ca, signal }, (res) => {
        resolve({
          status: res.statusCode,
          chunks: res,
          text: () =>
            new Promise((done, fail) => {
              let text = '';
              res.setEncoding('utf8');
              res.on('data', (part) => (text += part));
              res.on('end', () => done(text));
              res.on('error', fail);
              res.on('close', () => fail(new Error('the connection closed before the answer was complete')));
            }),
        });
      });
      req.on('error', reject);
      req.end(body);
    });
  }
}
