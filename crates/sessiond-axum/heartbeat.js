// sessiond browser heartbeat (served by sessiond-axum, and by the sessiond server for
// apps behind a proxy at /v1/apps/<app>/heartbeat.js; no build step).
//
// While a page that loads this script is open, it tells the server so every interval
// (WEBDEV's SessionHeartBeatEnable). When the page is closed the beats stop and the
// server ends the session ("heartbeat_lost") after interval + grace, without waiting
// for the idle timeout. A beat never counts as activity: it cannot keep an idle user's
// session past its idle timeout.
//
// Per page, on the script tag:
//   <script src="/_sessiond/heartbeat.js" defer></script>              on, server default
//   <script src="/_sessiond/heartbeat.js" data-interval="60" defer>     on, every 60 s
//   <script src="/_sessiond/heartbeat.js" data-active="false" defer>    off: only the idle
//                                                                        timeout applies
// or from code: sessiondHeartbeat.enable(60), sessiondHeartbeat.disable().
// After each answer it dispatches a "sessiond:heartbeat" event on document (detail: the
// sessiondHeartbeat object); when the server reports the session closed, it stops and
// dispatches "sessiond:closed" with {status, reason} as detail.
(function () {
  'use strict';
  var script = document.currentScript;
  var endpoint = script && script.src
    ? script.src.replace(/\.js(\?.*)?$/, '')
    : '/_sessiond/heartbeat';
  var data = (script && script.dataset) || {};
  var timer = null;
  var RETRY_S = 30;

  var api = {
    /** Whether this page keeps the session's heartbeat on. */
    active: data.active !== 'false',
    /** Seconds between beats, as the server last said. */
    interval: data.interval ? Number(data.interval) : null,
    /** "open", "none" (no session yet), "closed", or null before the first answer. */
    status: null,
    /** Why the session closed, once it has. */
    reason: null,
    /** Beats sent and answered. */
    beats: 0,
    enable: function (intervalSeconds) {
      api.active = true;
      if (intervalSeconds) api.interval = Number(intervalSeconds);
      return configure();
    },
    disable: function () {
      api.active = false;
      clearTimeout(timer);
      return configure();
    },
    beat: beat
  };

  function send(method, body) {
    return fetch(endpoint, {
      method: method,
      // The cookie goes with the beat; to another origin only where the server
      // allows that origin (CORS, the app's web.allowed_origins).
      credentials: 'include',
      cache: 'no-store',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().catch(function () { return {}; });
    });
  }

  function schedule(seconds) {
    clearTimeout(timer);
    if (api.active) timer = setTimeout(beat, seconds * 1000);
  }

  function handle(answer) {
    var before = api.status;
    api.status = answer.status || null;
    api.reason = answer.reason || null;
    if (answer.interval_s) api.interval = answer.interval_s;
    document.dispatchEvent(new CustomEvent('sessiond:heartbeat', { detail: api }));
    if (api.status === 'closed') {
      api.active = false;
      clearTimeout(timer);
      document.dispatchEvent(new CustomEvent('sessiond:closed', { detail: answer }));
      return answer;
    }
    // A session that appeared since the page loaded (signed in from script) gets
    // this page's heartbeat settings.
    if (before === 'none' && api.status === 'open') return configure();
    schedule(api.interval || RETRY_S);
    return answer;
  }

  function failed() {
    schedule(Math.min(api.interval || RETRY_S, RETRY_S));
  }

  function beat() {
    return send('POST').then(function (a) { api.beats += 1; return handle(a); }, failed);
  }

  function configure() {
    var body = { active: api.active };
    if (api.interval) body.interval_s = api.interval;
    return send('PUT', body).then(handle, failed);
  }

  window.sessiondHeartbeat = api;
  if (data.auto !== 'false') configure();
})();
