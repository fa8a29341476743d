// How a seat client ends: the exit codes of `sessiond connect` and the close reason each
// one stands for. The table is the one of crates/sessiond/src/exit.rs, code for code, so
// that a program using this module ends the way the reference client does; the scenario
// tests compare the `--help` tables of the three clients, so the text cannot drift.

/** The exit codes, by name. */
export const EXIT = Object.freeze({
  DONE: 0,
  FAILED: 1,
  USAGE: 2,
  HOUSE_FULL: 3,
  REFUSED: 4,
  KILLED: 10,
  CLOSED_ALL: 11,
  TAKEN_OVER: 12,
  HEARTBEAT_LOST: 13,
  IDLE_TIMEOUT: 14,
  ABSOLUTE_TIMEOUT: 15,
  EVICTED: 16,
  REPLACED: 17,
  LOGGED_OUT_ELSEWHERE: 18,
  CLOSED_OTHER: 19,
});

/** What 0 means for a seat client. */
export const DONE_MEANING = 'logged out (Ctrl-C, SIGTERM or SIGHUP: the seat is given back)';

/** Every code and what it means, in the order `--help` lists them. */
export const MEANINGS = Object.freeze([
  [EXIT.DONE, DONE_MEANING],
  [EXIT.FAILED, 'failed: a store, the disk, the network or the server'],
  [EXIT.USAGE, 'bad flags, configuration or input; nothing was tried'],
  [EXIT.HOUSE_FULL, 'house full, no seat taken'],
  [EXIT.REFUSED, 'refused (user limit, license)'],
  [EXIT.KILLED, 'killed by an administrator'],
  [EXIT.CLOSED_ALL, 'closed_all: an administrator disconnected everyone'],
  [EXIT.TAKEN_OVER, 'taken_over by another client'],
  [EXIT.HEARTBEAT_LOST, 'heartbeat_lost (or lease_expired)'],
  [EXIT.IDLE_TIMEOUT, 'idle_timeout'],
  [EXIT.ABSOLUTE_TIMEOUT, 'absolute_timeout'],
  [EXIT.EVICTED, 'evicted to make room'],
  [EXIT.REPLACED, 'replaced: the same user connected elsewhere'],
  [EXIT.LOGGED_OUT_ELSEWHERE, 'logged out elsewhere'],
  [EXIT.CLOSED_OTHER, 'closed for another reason'],
]);

// Each close reason the server sends, with its exit code and the words that tell the
// user what happened. A reason not listed (a newer server) ends with CLOSED_OTHER.
const REASONS = new Map([
  ['killed', [EXIT.KILLED, 'an administrator closed this session']],
  ['closed_all', [EXIT.CLOSED_ALL, 'an administrator disconnected everyone']],
  ['taken_over', [EXIT.TAKEN_OVER, 'another client took this seat over']],
  ['heartbeat_lost', [EXIT.HEARTBEAT_LOST, 'the server stopped hearing from this client']],
  ['lease_expired', [EXIT.HEARTBEAT_LOST, "the server stopped hearing from this client, and its seat's lease ran out"]],
  ['idle_timeout', [EXIT.IDLE_TIMEOUT, 'the session was idle too long']],
  ['absolute_timeout', [EXIT.ABSOLUTE_TIMEOUT, 'the session reached its maximum lifetime']],
  ['evicted', [EXIT.EVICTED, 'the session was evicted to make room']],
  ['replaced', [EXIT.REPLACED, 'the same user connected elsewhere']],
  ['logout', [EXIT.LOGGED_OUT_ELSEWHERE, 'the session was logged out']],
]);

/** Refusals of an open that the user must fix (exit REFUSED); any other is FAILED. */
export const REFUSALS = Object.freeze(new Set(['user_limit', 'license_expired', 'license_invalid']));

/** The exit code of a seat whose session was closed for `reason`. */
export function exitCodeFor(reason) {
  return REASONS.get(reason)?.[0] ?? EXIT.CLOSED_OTHER;
}

/** What a close `reason` means, in words for the user. */
export function explain(reason) {
  return REASONS.get(reason)?.[1] ?? 'the session was closed';
}

/** The `Exit codes:` section of `--help`, laid out as `sessiond` lays it. */
export function helpTable() {
  const lines = ['Exit codes:'];
  for (const [code, meaning] of MEANINGS) lines.push(`  ${String(code).padEnd(2)}  ${meaning}`);
  return lines.join('\n') + '\n';
}
