//! The Redis side of the cluster: key names and the Lua scripts that change
//! them. Every change to shared state is one script, so Redis applies it
//! atomically and appends its record to the event stream in the same step:
//! the stream order is the cluster's order (docs/cluster.md).

/// The keys of one cluster. They share the hash tag `{NAME}`, so they stay in
/// one slot should anyone put them on a Redis Cluster, and they never mix with
/// another `--cluster-name` on the same Redis.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// Random token set once per Redis dataset; a new one means Redis lost
    /// its data and every node must register its names again.
    pub epoch: String,
    /// Lower-cased name -> `NODE:CONN|COLOR|Display name`.
    pub names: String,
    /// The event stream every node reads.
    pub events: String,
    /// The last N broadcast events, `MSGID\nJSON` each, oldest first.
    pub history: String,
    /// Set of node ids that have registered (alive or not yet reaped).
    pub nodes: String,
    /// Node id -> last proposal sequence applied, to drop replays.
    pub seqs: String,
    /// Prefix of the per-node lease keys (`PREFIX` + node id).
    pub lease_prefix: String,
}

impl Keys {
    pub(crate) fn new(cluster: &str) -> Keys {
        let p = format!("{{{cluster}}}:");
        Keys {
            epoch: format!("{p}epoch"),
            names: format!("{p}names"),
            events: format!("{p}events"),
            history: format!("{p}history"),
            nodes: format!("{p}nodes"),
            seqs: format!("{p}seqs"),
            lease_prefix: format!("{p}node:"),
        }
    }

    pub(crate) fn lease(&self, node: &str) -> String {
        format!("{}{node}", self.lease_prefix)
    }
}

/// Upper bound (approximate, `MAXLEN ~`) of the event stream: it must cover
/// what a node misses while it is away from Redis; older entries are trimmed.
pub(crate) const STREAM_MAXLEN: u64 = 100_000;

/// One proposal: check the epoch, drop a replay, check and apply the name
/// claim and release, append the event, keep it in history if asked.
///
/// KEYS: epoch, names, events, history, seqs.
/// ARGV: 1 epoch, 2 node, 3 seq, 4 claim owner, 5 claim key, 6 claim value,
/// 7 release key, 8 release owner, 9 event, 10 history flag, 11 history len,
/// 12 stream maxlen, 13 ticket.
/// Returns `{'ok', id}`, `{'dup'}`, `{'taken'}` or `{'epoch'}`.
pub(crate) const PROPOSE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'epoch'} end
local ck = ARGV[5]
local function held_elsewhere()
  if ck == '' then return false end
  local cur = redis.call('HGET', KEYS[2], ck)
  return cur and string.sub(cur, 1, #ARGV[4] + 1) ~= ARGV[4] .. '|'
end
local last = tonumber(redis.call('HGET', KEYS[5], ARGV[2]) or '0')
if tonumber(ARGV[3]) <= last then
  -- A replay after a lost reply: the outcome is judged by who holds the name now.
  if held_elsewhere() then return {'taken'} end
  return {'dup'}
end
if held_elsewhere() then
  redis.call('HSET', KEYS[5], ARGV[2], ARGV[3])
  return {'taken'}
end
local released = ''
local rk = ARGV[7]
if rk ~= '' and rk ~= ck then
  local cur = redis.call('HGET', KEYS[2], rk)
  if cur and string.sub(cur, 1, #ARGV[8] + 1) == ARGV[8] .. '|' then
    redis.call('HDEL', KEYS[2], rk)
    released = rk
  end
end
if ck ~= '' then redis.call('HSET', KEYS[2], ck, ARGV[6]) end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[12], '*',
  'k', 'ev', 'e', ARGV[1], 'n', ARGV[2], 't', ARGV[13], 'h', ARGV[10],
  'ck', ck, 'cv', ARGV[6], 'r', released, 'd', ARGV[9])
if ARGV[10] == '1' then
  redis.call('RPUSH', KEYS[4], ARGV[1] .. '-' .. id .. '\n' .. ARGV[9])
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[11]), -1)
end
redis.call('HSET', KEYS[5], ARGV[2], ARGV[3])
return {'ok', id}
"#;

/// Register again the names a node holds (after a reconnect, above all after
/// Redis restarted empty). A name that is free is taken back and announced as
/// `reg`; a name now held by someone else is reported lost.
///
/// KEYS: epoch, names, events. ARGV: 1 epoch, 2 stream maxlen, then
/// (key, value, owner) triples. Returns `{'ok', {lost keys}}` or `{'epoch'}`.
pub(crate) const RECLAIM: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'epoch'} end
local lost = {}
for i = 3, #ARGV - 2, 3 do
  local k, v, o = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local cur = redis.call('HGET', KEYS[2], k)
  if cur and string.sub(cur, 1, #o + 1) ~= o .. '|' then
    table.insert(lost, k)
  elseif cur ~= v then
    redis.call('HSET', KEYS[2], k, v)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'k', 'reg', 'e', ARGV[1], 'ck', k, 'cv', v)
  end
end
return {'ok', lost}
"#;

/// Free the names of every registered node whose lease has expired, once:
/// the names go and a `free` record per name is appended in the same step,
/// so two survivors reaping at once cannot both announce a leave.
///
/// KEYS: nodes, names, events, epoch. ARGV: 1 lease key prefix, 2 stream
/// maxlen.
/// Returns the number of nodes alive.
pub(crate) const REAP: &str = r#"
local alive = 0
local ep = redis.call('GET', KEYS[4]) or ''
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. node) == 1 then
    alive = alive + 1
  else
    local all = redis.call('HGETALL', KEYS[2])
    local p = node .. ':'
    for i = 1, #all - 1, 2 do
      if string.sub(all[i + 1], 1, #p) == p then
        redis.call('HDEL', KEYS[2], all[i])
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*',
          'k', 'free', 'e', ep, 'ck', all[i], 'cv', all[i + 1])
      end
    end
    redis.call('SREM', KEYS[1], node)
  end
end
return alive
"#;

/// Lua shared by two scripts: `ep` is the epoch in KEYS[1], set to the
/// candidate ARGV[1] first if Redis has none.
macro_rules! epoch_or_candidate {
    () => {
        "
local ep = redis.call('GET', KEYS[1])
if not ep then
  ep = ARGV[1]
  redis.call('SET', KEYS[1], ep)
end
"
    };
}

/// The epoch, set to the candidate if Redis has none (a fresh or emptied
/// dataset), with the state a reader starts from: the last stream id, the
/// names and the history, all read in one atomic step.
///
/// KEYS: epoch, names, events, history. ARGV: 1 candidate epoch.
/// Returns `{epoch, last id, {names flat}, {history}}`.
pub(crate) const SNAPSHOT: &str = concat!(
    epoch_or_candidate!(),
    r#"
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local lastid = '0-0'
if #last > 0 then lastid = last[1][1] end
return {ep, lastid, redis.call('HGETALL', KEYS[2]), redis.call('LRANGE', KEYS[4], 0, -1)}
"#
);

/// The epoch, set to the candidate if Redis has none.
///
/// KEYS: epoch. ARGV: 1 candidate epoch. Returns the epoch.
pub(crate) const EPOCH: &str = concat!(epoch_or_candidate!(), "return ep\n");
