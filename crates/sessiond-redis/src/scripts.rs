//! The Lua scripts. None of them knows a session rule: `COMMIT` checks revisions and
//! applies writes that Rust computed with the core's logic; the `GATHER_*` scripts read
//! a consistent snapshot of what that logic needs in one round trip.
//!
//! Every script is given the app's revision key as `KEYS[1]`, so a cluster client
//! routes it to the app's slot. `COMMIT` is given every key it touches. The gather
//! scripts also read session records whose ids they find in an index: they build those
//! key names from the app's record prefix, which carries the same hash tag, so every key
//! they touch is in the one slot of `KEYS[1]` (what Redis Cluster requires of a script).
//!
//! A record a gather script cannot find is never taken for gone there: while a cluster
//! moves the app's slot, Redis checks the keys a script declares, not those it builds,
//! so a record already moved reads as missing. The scripts report such ids; Rust asks
//! for each one the cluster way (following the move), starts over when one exists
//! (the slot is moving), and drops index entries of records truly gone with
//! `DROP_GHOSTS`, which declares every key it touches.

use std::sync::LazyLock;

use redis::Script;

/// Checks revisions, then applies every write of a batch, or none.
///
/// `KEYS[1]` is the app's revision counter, the rest are record and index keys named by
/// position in `ARGV`. `ARGV` is `expected app rev` (empty: no check), `mode` (`all`:
/// any stale record refuses the whole batch; `each`: stale records' groups are skipped),
/// then groups of: record key position, expected record rev (`0`: must not exist),
/// bump (`1` if the group changes who is open, so the app rev must move), action (`put`
/// followed by the JSON, or `del`), number of index ops, then the ops: `za`, key
/// position, score, member (ZADD), `zr`, key position, member (ZREM) or `hs`, key
/// position, field, value (HSET: a webhook delivery the write owes).
///
/// Returns `{0}` on a conflict of the whole batch, else `{1, applied_1, applied_2, ...}`
/// with one flag per group.
pub(crate) static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local a = ARGV
if a[1] ~= '' and (redis.call('GET', KEYS[1]) or '0') ~= a[1] then
  return {0}
end
local groups = {}
local i = 3
while i <= #a do
  local g = {rec = tonumber(a[i]), expect = a[i + 1], bump = a[i + 2], action = a[i + 3]}
  i = i + 4
  if g.action == 'put' then
    g.json = a[i]
    i = i + 1
  end
  g.nops = tonumber(a[i])
  g.ops = i + 1
  i = i + 1
  for _ = 1, g.nops do
    if a[i] == 'za' or a[i] == 'hs' then i = i + 4 else i = i + 3 end
  end
  groups[#groups + 1] = g
end
local out = {1}
for n, g in ipairs(groups) do
  local ok = (redis.call('HGET', KEYS[g.rec], 'rev') or '0') == g.expect
  if not ok and a[2] == 'all' then
    return {0}
  end
  out[n + 1] = ok and 1 or 0
end
local bump = false
for n, g in ipairs(groups) do
  if out[n + 1] == 1 then
    local key = KEYS[g.rec]
    if g.action == 'put' then
      redis.call('HSET', key, 'rev', tostring(tonumber(g.expect) + 1), 'json', g.json)
    else
      redis.call('DEL', key)
    end
    local j = g.ops
    for _ = 1, g.nops do
      if a[j] == 'za' then
        redis.call('ZADD', KEYS[tonumber(a[j + 1])], a[j + 2], a[j + 3])
        j = j + 4
      elseif a[j] == 'hs' then
        redis.call('HSET', KEYS[tonumber(a[j + 1])], a[j + 2], a[j + 3])
        j = j + 4
      else
        redis.call('ZREM', KEYS[tonumber(a[j + 1])], a[j + 2])
        j = j + 3
      end
    end
    if g.bump == '1' then bump = true end
  end
end
if bump then redis.call('INCR', KEYS[1]) end
return out
"#,
    )
});

/// `COMMIT` for its most common batch, one record rewritten with no index to move and
/// no app revision to check or bump (a storage write): the same check and write with
/// none of the batch decoding, which is most of `COMMIT`'s cost.
///
/// `KEYS`: app rev (unused; it keeps every key of a script in the app's slot), record.
/// `ARGV`: expected record rev, JSON, mode (`all` or `each`). Answers as `COMMIT` does.
pub(crate) static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if (redis.call('HGET', KEYS[2], 'rev') or '0') ~= ARGV[1] then
  if ARGV[3] == 'all' then return {0} end
  return {1, 0}
end
redis.call('HSET', KEYS[2], 'rev', tostring(tonumber(ARGV[1]) + 1), 'json', ARGV[2])
return {1, 1}
"#,
    )
});

/// Reads what admission needs, as one snapshot.
///
/// `KEYS`: app rev, open, seated, due, the user's open set. `ARGV`: record prefix, now
/// (ms), seats (empty when seats do not matter for this open), due limit, idlest
/// wanted besides the user's sessions (each of which may be displaced too, so one more
/// is read per user session), take-over id (empty: none), read the user's sessions
/// (`1`/`0`).
///
/// Returns `{app rev, seats used, user, take_over, due, idlest}` where each list is
/// flat `id, rev, json, id, rev, json, ...` (a missing field is empty: Rust decides
/// what a record is worth, including one it cannot decode). `due` (open sessions past
/// their deadline) and `idlest` (seat holders by last activity, skipping the due ones)
/// are read only when the seats are all taken on paper. `missing` is flat
/// `index, id, ...`: ids an index named whose record the script did not find, with the
/// index they came from (`u` the user's, `o` open, `d` due, `s` seated).
pub(crate) static GATHER_OPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function rec(out, id)
  local r = redis.call('HMGET', ARGV[1] .. id, 'rev', 'json')
  if r[1] or r[2] then
    out[#out + 1] = id
    out[#out + 1] = r[1] or ''
    out[#out + 1] = r[2] or ''
    return true
  end
  return false
end
local rev = redis.call('GET', KEYS[1]) or '0'
local used = redis.call('ZCARD', KEYS[3])
local user, take, due, idlest, missing = {}, {}, {}, {}, {}
local function read(out, index, id)
  if not rec(out, id) then
    missing[#missing + 1] = index
    missing[#missing + 1] = id
  end
end
local want = tonumber(ARGV[5])
if ARGV[7] == '1' then
  local ids = redis.call('ZRANGE', KEYS[5], 0, -1)
  for _, id in ipairs(ids) do read(user, 'u', id) end
  if want > 0 then want = want + #ids end
end
if ARGV[6] ~= '' and redis.call('ZSCORE', KEYS[2], ARGV[6]) then read(take, 'o', ARGV[6]) end
if ARGV[3] ~= '' and used >= tonumber(ARGV[3]) then
  local skip = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))) do
    skip[id] = true
    read(due, 'd', id)
  end
  local from = 0
  local found = 0
  while found < want do
    local ids = redis.call('ZRANGE', KEYS[3], from, from + want + 15)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      if found < want and not skip[id] then
        read(idlest, 's', id)
        found = found + 1
      end
    end
    from = from + #ids
  end
end
return {rev, used, user, take, due, idlest, missing}
"#,
    )
});

/// Reads an app's due work: open sessions past their deadline and closed ones past
/// their retention, at most `limit` of each.
///
/// `KEYS`: app rev, due, purge. `ARGV`: record prefix, now (ms), due limit, purge limit,
/// due offset (entries to pass over first: unreadable records already met).
/// Returns `{due, purge, due scanned, purge scanned, due missing, purge missing}`:
/// each list flat `id, rev, json, ...` (a missing field is empty), how many index
/// entries each read looked at, and the ids whose record the script did not find (see
/// the module docs: Rust drops the truly gone, so they cannot hold the queue up).
pub(crate) static GATHER_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function read(key, offset, limit)
  local out, missing = {}, {}
  if limit <= 0 then return out, 0, missing end
  local ids = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. ARGV[2], 'LIMIT', offset, limit)
  for _, id in ipairs(ids) do
    local r = redis.call('HMGET', ARGV[1] .. id, 'rev', 'json')
    if r[1] or r[2] then
      out[#out + 1] = id
      out[#out + 1] = r[1] or ''
      out[#out + 1] = r[2] or ''
    else
      missing[#missing + 1] = id
    end
  end
  return out, #ids, missing
end
local due, due_n, due_missing = read(KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[3]))
local purge, purge_n, purge_missing = read(KEYS[3], 0, tonumber(ARGV[4]))
return {due, purge, due_n, purge_n, due_missing, purge_missing}
"#,
    )
});

/// Drops index entries whose record is gone, checking each record's key, which it
/// declares (so while a cluster moves the slot, Redis sends it where every key is, or
/// asks to try again, rather than let it see a moved record as gone).
///
/// `KEYS`: the app's revision (not touched), the index, then the record of each id.
/// `ARGV`: the ids. Returns how many entries it dropped.
pub(crate) static DROP_GHOSTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local dropped = 0
for i, id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 2]) == 0 then
    dropped = dropped + redis.call('ZREM', KEYS[2], id)
  end
end
return dropped
"#,
    )
});

/// Claims an app's due webhook deliveries (`hooks.rs`).
///
/// `KEYS`: app rev (routing), deliveries hash, due set. `ARGV`: now (ms), the lease's end
/// (ms), how many at most. Moves each due delivery's score to the lease's end and
/// returns their JSON; a due entry whose delivery is gone is dropped.
pub(crate) static HOOK_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local j = redis.call('HGET', KEYS[2], id)
  if j then
    redis.call('ZADD', KEYS[3], ARGV[2], id)
    out[#out + 1] = j
  else
    redis.call('ZREM', KEYS[3], id)
  end
end
return out
"#,
    )
});

/// Records a webhook try's outcome, or an operator's resend.
///
/// `KEYS`: app rev (routing), deliveries hash, due set, dead set. `ARGV`: delivery id,
/// action, the claim's end (ms; checked for `retry` and `dead`: another node's claim
/// since makes them change nothing), JSON, due (ms). Actions: `del` (delivered:
/// removed), `retry` (JSON kept, due again at `due`), `dead` (JSON kept, a dead letter),
/// `resend` (if the delivery is there: JSON kept, due at `due`, no longer dead).
/// Returns 1 if it changed something.
pub(crate) static HOOK_SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local id, action = ARGV[1], ARGV[2]
if action == 'del' then
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  return 1
end
if action == 'resend' then
  if redis.call('HEXISTS', KEYS[2], id) == 0 then return 0 end
  redis.call('HSET', KEYS[2], id, ARGV[4])
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZADD', KEYS[3], ARGV[5], id)
  return 1
end
local s = redis.call('ZSCORE', KEYS[3], id)
if not s or tonumber(s) ~= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[2], id, ARGV[4])
if action == 'retry' then
  redis.call('ZADD', KEYS[3], ARGV[5], id)
else
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[4], 0, id)
end
return 1
"#,
    )
});

/// Keeps webhook deliveries that report no change (`seats_full`).
///
/// `KEYS`: app rev (routing), deliveries hash, due set. `ARGV`: id, JSON, due (ms),
/// repeated.
pub(crate) static HOOK_PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for i = 1, #ARGV, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[3], ARGV[i + 2], ARGV[i])
end
return 1
"#,
    )
});

/// Reads an app's webhook deliveries for a list.
///
/// `KEYS`: app rev (routing), deliveries hash, due set, dead set. `ARGV`: which (`p`
/// pending, `d` dead, `a` both, anything else none), how many of each at most.
/// Returns `{flat json, due pairs (due empty for a dead letter), pending, dead}`.
pub(crate) static HOOK_LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
local n = tonumber(ARGV[2])
if ARGV[1] == 'p' or ARGV[1] == 'a' then
  local due = redis.call('ZRANGE', KEYS[3], 0, n - 1, 'WITHSCORES')
  for i = 1, #due, 2 do
    local j = redis.call('HGET', KEYS[2], due[i])
    if j then out[#out + 1] = j; out[#out + 1] = due[i + 1] end
  end
end
if ARGV[1] == 'd' or ARGV[1] == 'a' then
  local dead = redis.call('ZRANGE', KEYS[4], 0, n - 1)
  for _, id in ipairs(dead) do
    local j = redis.call('HGET', KEYS[2], id)
    if j then out[#out + 1] = j; out[#out + 1] = '' end
  end
end
return {out, redis.call('ZCARD', KEYS[3]), redis.call('ZCARD', KEYS[4])}
"#,
    )
});

/// Removes an app's old dead letters.
///
/// `KEYS`: app rev (routing), deliveries hash, due set, dead set. `ARGV`: the exclusive
/// upper bound of the ids to remove, as `ZRANGEBYLEX` takes it (`(<id>`), how many at
/// most. Returns how many it removed.
pub(crate) static HOOK_FORGET_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ids = redis.call('ZRANGEBYLEX', KEYS[4], '-', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[4], id)
end
return #ids
"#,
    )
});
