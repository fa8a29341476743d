// `sessiond-seat`: the seat client on the command line, with the flags, the words and the
// exit codes of `sessiond connect` (crates/sessiond/src/connect.rs).
//
// It opens a seat; when the house is full it shows the holders and asks which to take
// over (or quits, or takes the idlest); it heartbeats at the interval the server gives;
// it listens to its event stream; when its session is closed it prints why and exits
// with the code of the reason; Ctrl-C, SIGTERM and SIGHUP log out and exit 0.

import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

import { EXIT, REFUSALS, helpTable } from './exits.js';
import { SeatClient } from './seat.js';
import { ApiError, SeatError, SeatsExhausted } from './transport.js';
import { VERSION } from './version.js';

const PROG = 'sessiond-seat';
const DEFAULT_SERVER = 'http://127.0.0.1:7420';
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const ON_FULL = ['ask', 'quit', 'take-over-idlest'];
// A session id as `Uuid::parse_str` reads it: hyphenated, simple, braced or URN.
const HYPHENATED = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const SESSION_ID = new RegExp(`^(?:[0-9a-f]{32}|${HYPHENATED}|\\{${HYPHENATED}\\}|urn:uuid:${HYPHENATED})$`, 'i');

const OPTIONS = {
  server: { type: 'string' },
  token: { type: 'string' },
  'ca-cert': { type: 'string' },
  app: { type: 'string' },
  user: { type: 'string' },
  label: { type: 'string' },
  heartbeat: { type: 'string' },
  'on-full': { type: 'string' },
  'take-over': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
};

/** The `--help` text. */
export function helpText() {
  return `Take a seat in an app, like a desktop client: heartbeat, listen, exit when closed

Usage: ${PROG} [OPTIONS] --app <APP> --user <USER>

Options:
  --server <SERVER>        URL of the sessiond server [env: SESSIOND_SERVER] [default: ${DEFAULT_SERVER}]
  --token <TOKEN>          the app's client credential (client_key, made for programs on users'
                           machines: it can only take a seat), or its app key, or the admin token
                           [env: SESSIOND_TOKEN]
  --ca-cert <PEM>          for an https:// server whose certificate a private CA signed: that CA's
                           certificate (PEM), trusted besides Node's roots [env: SESSIOND_CA_CERT]
  --app <APP>              the app to take a seat in
  --user <USER>            the user
  --label <LABEL>          a label for this client (machine name...)
  --heartbeat <SECONDS>    heartbeat interval in seconds (default: the app's, else 30)
  --on-full <ON_FULL>      what to do when every seat is taken: ask (the default on a terminal),
                           quit with exit code 3 (the default otherwise), take-over-idlest
  --take-over <ID>         take over this session's seat right away
  -h, --help               print this help
  -V, --version            print the version

${helpTable()}
Examples:
  ${PROG} --app gestan --user ann --label desk-1 --token "$GESTAN_KEY"
  ${PROG} --app gestan --user bob --on-full take-over-idlest
`;
}

/** The flags, with the environment's defaults; throws a string on bad usage. */
export function parse(argv, env = process.env) {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (e) {
    throw e.message;
  }
  if (values.help || values.version) return values;
  for (const name of ['app', 'user']) {
    if (values[name] === undefined) throw `the following required argument was not provided: --${name}`;
  }
  if (values['on-full'] !== undefined && !ON_FULL.includes(values['on-full'])) {
    throw `invalid value '${values['on-full']}' for '--on-full' (possible values: ${ON_FULL.join(', ')})`;
  }
  let heartbeat;
  if (values.heartbeat !== undefined) {
    if (!/^\d+$/.test(values.heartbeat) || Number(values.heartbeat) > 0xffffffff) {
      throw `invalid value '${values.heartbeat}' for '--heartbeat': not a number of seconds`;
    }
    heartbeat = Number(values.heartbeat);
  }
  return {
    server: values.server ?? env.SESSIOND_SERVER ?? DEFAULT_SERVER,
    token: values.token ?? env.SESSIOND_TOKEN,
    caCert: values['ca-cert'] ?? env.SESSIOND_CA_CERT,
    app: values.app,
    user: values.user,
    label: values.label,
    heartbeat,
    onFull: values['on-full'],
    takeOver: values['take-over'],
  };
}

/** `2026-05-01T08:00:00.123Z` as `2026-05-01 08:00:00Z`; anything else as is. */
export function shortTime(rfc3339) {
  if (typeof rfc3339 !== 'string') return '-';
  if (rfc3339.length < 20 || rfc3339[10] !== 'T') return rfc3339;
  const zone = rfc3339.slice(19).replace(/^[.0-9]*/, '');
  return `${rfc3339.slice(0, 10)} ${rfc3339.slice(11, 19)}${zone}`;
}

/** Columns two spaces apart, each as wide as its widest cell, no trailing spaces. */
export function rows(indent, lines) {
  const widths = [];
  for (const cells of lines) {
    cells.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, [...cell].length)));
  }
  return lines
    .map((cells) => (indent + cells.map((c, i) => c + ' '.repeat(widths[i] - [...c].length)).join('  ')).trimEnd() + '\n')
    .join('');
}

/** The seat holders of a full house, numbered from 1 as the prompt asks. */
export function holdersText(holders) {
  return rows(
    '  ',
    holders.map((s, i) => [
      `[${i + 1}]`,
      s.user || '(guest)',
      s.client?.label || '-',
      s.client?.ip || '-',
      `opened ${shortTime(s.created_at)}`,
      `last activity ${shortTime(s.last_activity_at)}`,
      `last heartbeat ${shortTime(s.last_heartbeat_at)}`,
    ]),
  );
}

function fullHouseText(app, seats) {
  const total = seats?.total;
  if (total === 1) return `The only seat of ${app} is taken:`;
  if (total == null) return `Every seat of ${app} is taken:`;
  return `All ${total} seats of ${app} are taken:`;
}

const say = (text) => process.stdout.write(text + '\n');
const complain = (text) => process.stderr.write(text + '\n');

let lines = null;
/** The next line of standard input, or null at its end. */
async function ask(prompt) {
  process.stdout.write(prompt);
  lines ??= createInterface({ input: process.stdin, crlfDelay: Infinity })[Symbol.asyncIterator]();
  const next = await lines.next();
  return next.done ? null : next.value.trim();
}

async function choose(onFull, full) {
  if (onFull === 'take-over-idlest') return full.idlest()?.id ?? null;
  if (onFull === 'ask') {
    const answer = await ask('Take over which seat? Enter its number, or q to quit: ');
    if (answer !== null && /^\d+$/.test(answer)) {
      const n = Number(answer);
      if (n >= 1 && n <= full.holders.length) return full.holders[n - 1].id ?? null;
    }
  }
  return null;
}

/** Runs the seat client to its end; resolves to the exit code. */
export async function run(argv = process.argv.slice(2)) {
  let args;
  try {
    args = parse(argv);
  } catch (message) {
    complain(`${PROG}: ${message}`);
    return EXIT.USAGE;
  }
  if (args.help) {
    process.stdout.write(helpText());
    return EXIT.DONE;
  }
  if (args.version) {
    say(`${PROG} ${VERSION}`);
    return EXIT.DONE;
  }
  let client;
  try {
    client = new SeatClient(args.server, {
      credential: args.token,
      caCert: args.caCert,
      userAgent: `sessiond-seat-js/${VERSION}`,
    });
  } catch (e) {
    complain(`${PROG}: ${e.message}`);
    return EXIT.FAILED;
  }
  if (args.takeOver !== undefined && !SESSION_ID.test(args.takeOver)) {
    complain(`${PROG}: --take-over '${args.takeOver.slice(0, 64)}': not a session id (see \`sessiond sessions list\`)`);
    return EXIT.USAGE;
  }
  const onFull = args.onFull ?? (process.stdin.isTTY ? 'ask' : 'quit');
  let takeOver = args.takeOver;
  // Whether the take-over being tried is the one the flag asked for (not a holder picked
  // after a full house, which may have left meanwhile).
  let asked = takeOver !== undefined;
  let seat;
  for (;;) {
    const askedNow = asked;
    asked = false;
    try {
      seat = await client.open(args.app, args.user, { label: args.label, heartbeat: args.heartbeat, takeOver });
      break;
    } catch (e) {
      if (e instanceof SeatsExhausted) {
        say(fullHouseText(args.app, e.seats));
        process.stdout.write(holdersText(e.holders));
        const choice = await choose(onFull, e);
        if (choice === null) {
          say('No seat taken; quitting.');
          return EXIT.HOUSE_FULL;
        }
        say(`Taking over seat ${choice}...`);
        takeOver = choice;
        continue;
      }
      if (e instanceof ApiError && e.code === 'take_over_target') {
        if (askedNow) {
          complain(`${PROG}: --take-over: no open session of ${args.app} has that id`);
          return EXIT.USAGE;
        }
        say('That seat was freed or taken meanwhile; trying again.');
        takeOver = undefined;
        continue;
      }
      if (!(e instanceof SeatError)) throw e;
      complain(`${PROG}: cannot connect: ${e.message}`);
      return e instanceof ApiError && REFUSALS.has(e.code) ? EXIT.REFUSED : EXIT.FAILED;
    }
  }
  // A signal stops the seat; a second one while logging out changes nothing. They are
  // caught before the user is told to press Ctrl-C, so that none after that line leaves
  // the seat taken.
  const stopped = new Promise((resolve) => {
    for (const signal of STOP_SIGNALS) process.on(signal, () => resolve(null));
  });
  say(
    `Connected to ${args.app} as ${args.user} (session ${seat.id}). ` +
      `Heartbeat every ${seat.interval} s. Press Ctrl-C to disconnect.`,
  );
  seat.start({ onWarning: complain });
  const ended = await Promise.race([seat.ended, stopped]);
  if (ended) {
    say(String(ended));
    return ended.exitCode;
  }
  try {
    await seat.logout();
    say('Logged out.');
  } catch (e) {
    complain(`logout failed: ${e.message}`);
  }
  return EXIT.DONE;
}
