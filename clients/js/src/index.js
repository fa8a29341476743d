// sessiond-seat: a seat client of sessiond for Node 18+, no dependencies.
//
//   import { SeatClient, SeatsExhausted } from 'sessiond-seat';
//
//   const client = new SeatClient('https://sessions.example.com', { credential: clientKey });
//   let seat;
//   try {
//     seat = await client.open('gestan', 'ann', { label: 'desk-1' });
//   } catch (e) {
//     if (!(e instanceof SeatsExhausted)) throw e;
//     seat = await client.open('gestan', 'ann', { label: 'desk-1', takeOver: e.idlest().id });
//   }
//   seat.start();
//   const ended = await seat.ended;   // settles when the session is closed
//   console.log(String(ended));       // "Disconnected: an administrator closed this session (killed, by app)."
//   process.exitCode = ended.exitCode;
//
// `seat.logout()` gives the seat back. The command line (`bin/sessiond-seat.js`) behaves
// as `sessiond connect`; docs/CLIENTS.md has the protocol step by step.

export { EXIT, MEANINGS, REFUSALS, exitCodeFor, explain, helpTable } from './exits.js';
export { Ended, Seat, SeatClient } from './seat.js';
export { ApiError, SeatError, SeatsExhausted, Server, TransportError } from './transport.js';
export { Parser, StreamError } from './sse.js';
export { VERSION } from './version.js';
