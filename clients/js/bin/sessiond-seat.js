#!/usr/bin/env node
// `sessiond-seat`: take a seat in an app, like `sessiond connect` (see --help).
import { run } from '../src/cli.js';

const code = await run();
// Standard output and error are written synchronously to files and pipes on POSIX, so
// nothing printed is lost by exiting here (which also ends the open connections).
process.exit(code);
