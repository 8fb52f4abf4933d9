"""The Lua scripts that keep cluster state consistent in Redis: each runs atomically there.

Key layout under the base prefix ``B`` (``{RELAY_REDIS_PREFIX}fastrelay:``):

- ``B nodes``: sorted set, node id → Redis time (ms) of its last heartbeat.
- ``B n:{node}:a:{app}``: hash, channel → that node's subscriptions; ``B n:{node}:apps``: set
  of apps with such a hash; ``B n:{node}:conns``: hash, app → that node's connections.
- ``B n:{node}:pres``: set of the node's presence memberships, each a JSON array
  ``[app, channel, socket_id, user_key]``, so a dead node's members can be found.
- ``B p:{app}:{channel}:m``: hash, ``{node}|{socket_id}`` → that connection's ``user_info``
  (JSON), one field per joined connection; ``…:id``: hash, user key → the user id (JSON) as
  first joined; ``…:u``: hash, user key → connections of that user;
  ``…:o:{user key}``: sorted set of that user's connection fields in join order;
  ``…:i``: hash, user key → ``[user_id, user_info]`` as the roster shows it (the earliest
  remaining connection's). ``B joins``: the counter that orders joins.
- ``B o:{app}:{channel}``: set of the nodes with subscribers of the channel (cluster-wide
  ``channel_occupied``/``channel_vacated``); ``B n:{node}:occ``: the node's channels there,
  as ``[app, channel]``.
- ``B c:{app}:{channel}``: the last event of a cache channel, ``[event, data]``, with a TTL.
- ``B h:{app}:{channel}:seq``: the channel's last history id (never expires, so ids are never
  reused while Redis keeps its data); ``B h:{app}:{channel}``: list of the newest records
  (JSON, RELAY_EXTRAS.md §4.1), expiring with the max age; ``B h:epoch``: the store's epoch.

Time is Redis's own (``TIME``), so nodes with skewed clocks agree on who is dead.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "CHANNEL",
    "CHANNELS",
    "CONNECTIONS",
    "HEARTBEAT",
    "HISTORY_PUBLISH",
    "JOIN",
    "LEAVE",
    "NODE_LEAVE",
    "NODE_RESET",
    "OCCUPANCY",
    "sha",
]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_LIVE = (
    _NOW
    + """
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')
"""
)

# Leaves one connection: nil when ``field`` is not a connection of ``ukey`` there, 0 when the
# user has others (the roster then shows the earliest remaining one's info, PROTOCOL.md §3.5),
# else the member's [user_id, info].
_LEAVE_ONE = """
local function leave_one(pk, field, ukey)
  local order = pk .. ':o:' .. ukey
  if redis.call('ZREM', order, field) == 0 then
    return nil
  end
  redis.call('HDEL', pk .. ':m', field)
  local left = redis.call('HINCRBY', pk .. ':u', ukey, -1)
  if left > 0 then
    -- The roster keeps the first joiner's user_id and shows the earliest remaining info.
    local earliest = redis.call('ZRANGE', order, 0, 0)[1]
    local id = redis.call('HGET', pk .. ':id', ukey)
    if earliest and id then
      local info = redis.call('HGET', pk .. ':m', earliest)
      redis.call('HSET', pk .. ':i', ukey, '[' .. id .. ',' .. info .. ']')
    end
    return 0
  end
  redis.call('HDEL', pk .. ':u', ukey)
  local member = redis.call('HGET', pk .. ':i', ukey) or '[null,{}]'
  redis.call('HDEL', pk .. ':i', ukey)
  redis.call('HDEL', pk .. ':id', ukey)
  return member
end
"""

# Removes every presence member and count of ``node``; appends (app, channel, member) to
# ``gone`` for each user left with no connection.
_DROP_NODE = (
    _LEAVE_ONE
    + """
local function drop_counts(base, node)
  local nk = base .. 'n:' .. node
  for _, app in ipairs(redis.call('SMEMBERS', nk .. ':apps')) do
    redis.call('DEL', nk .. ':a:' .. app)
  end
  redis.call('DEL', nk .. ':apps', nk .. ':conns')
end

local function drop_occupancy(base, node, vacated)
  local occupied = base .. 'n:' .. node .. ':occ'
  for _, entry in ipairs(redis.call('SMEMBERS', occupied)) do
    local c = cjson.decode(entry)
    local key = base .. 'o:' .. c[1] .. ':' .. c[2]
    if redis.call('SREM', key, node) == 1 and redis.call('SCARD', key) == 0 then
      table.insert(vacated, c[1])
      table.insert(vacated, c[2])
    end
  end
  redis.call('DEL', occupied)
end

local function drop_node(base, node, gone, vacated)
  drop_occupancy(base, node, vacated)
  local pres = base .. 'n:' .. node .. ':pres'
  for _, entry in ipairs(redis.call('SMEMBERS', pres)) do
    local m = cjson.decode(entry)
    local member = leave_one(base .. 'p:' .. m[1] .. ':' .. m[2], node .. '|' .. m[3], m[4])
    if member and member ~= 0 then
      table.insert(gone, m[1])
      table.insert(gone, m[2])
      table.insert(gone, member)
    end
  end
  redis.call('DEL', pres)
  drop_counts(base, node)
end
"""
)

# KEYS: m, u, i, node's pres set, join counter. ARGV: field, [user_id, info], user key, limit,
# membership, user_id JSON, info JSON. Returns {-1} when full, else {1 if first connection of
# the user anywhere else 0, roster}.
JOIN = """
local pk = string.sub(KEYS[1], 1, -3)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return {0, redis.call('HGETALL', KEYS[3])}
end
local count = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0')
local limit = tonumber(ARGV[4])
if count == 0 and limit >= 0 and redis.call('HLEN', KEYS[2]) >= limit then
  return {-1}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[7])
redis.call('SADD', KEYS[4], ARGV[5])
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('ZADD', pk .. ':o:' .. ARGV[3], redis.call('INCR', KEYS[5]), ARGV[1])
local first = 0
if count == 0 then
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[2])
  redis.call('HSET', pk .. ':id', ARGV[3], ARGV[6])
  first = 1
end
return {first, redis.call('HGETALL', KEYS[3])}
"""

# KEYS: m, u, i, node's pres set. ARGV: field, user key, membership.
# Returns the member's [user_id, info] when it was the user's last connection, 0 when not,
# nil when the connection was not joined as that user (never, or already reaped).
LEAVE = (
    _LEAVE_ONE
    + """
local member = leave_one(string.sub(KEYS[1], 1, -3), ARGV[1], ARGV[2])
if member == nil then
  return false
end
redis.call('SREM', KEYS[4], ARGV[3])
return member
"""
)

# KEYS: nodes. ARGV: node, timeout ms, base.
# Heart-beats for ARGV[1], then removes every node silent for longer than the timeout: its
# counts, and its presence members. Returns {gone, others, new}: gone is a flat list of
# (app, channel, [user_id, info]) for users that left with a dead node; others a flat list of
# (app, connections on the other live nodes); new is 1 when this node was not registered.
HEARTBEAT = (
    _NOW
    + _DROP_NODE
    + """
local base = ARGV[3]
local new = redis.call('ZADD', KEYS[1], now, ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
local gone = {}
local vacated = {}
for _, node in ipairs(dead) do
  drop_node(base, node, gone, vacated)
  redis.call('ZREM', KEYS[1], node)
end
local totals = {}
local apps = {}
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if node ~= ARGV[1] then
    local kv = redis.call('HGETALL', base .. 'n:' .. node .. ':conns')
    for j = 1, #kv, 2 do
      if totals[kv[j]] == nil then
        totals[kv[j]] = 0
        table.insert(apps, kv[j])
      end
      totals[kv[j]] = totals[kv[j]] + tonumber(kv[j + 1])
    end
  end
end
local others = {}
for _, app in ipairs(apps) do
  table.insert(others, app)
  table.insert(others, totals[app])
end
return {gone, others, new, vacated}
"""
)

# KEYS: nodes. ARGV: node, base. A node leaving the cluster: returns gone as HEARTBEAT does.
NODE_LEAVE = (
    _DROP_NODE
    + """
local gone = {}
local vacated = {}
drop_node(ARGV[2], ARGV[1], gone, vacated)
redis.call('ZREM', KEYS[1], ARGV[1])
return {gone, vacated}
"""
)

# KEYS: occupying nodes of the channel, the node's occupied set. ARGV: node, 1 (first local
# subscriber) or 0 (last gone), the channel as [app, channel]. Returns 1 when the channel became
# occupied (or vacant) across the cluster by this.
OCCUPANCY = """
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[2], ARGV[3])
  if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then
    return 1
  end
  return 0
end
redis.call('SREM', KEYS[2], ARGV[3])
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  return 1
end
return 0
"""

# KEYS: nodes. ARGV: node, base. Forgets the node's counts and occupied channels, quietly
# (before a fresh snapshot).
NODE_RESET = (
    _DROP_NODE
    + """
drop_counts(ARGV[2], ARGV[1])
drop_occupancy(ARGV[2], ARGV[1], {})  -- quietly: the snapshot that follows re-adds the rest
return 1
"""
)

# KEYS: nodes. ARGV: base, timeout ms, app, prefix.
# Flat list of (channel, subscriptions on live nodes, presence users).
CHANNELS = (
    _LIVE
    + """
local base, app, prefix = ARGV[1], ARGV[3], ARGV[4]
local counts = {}
local names = {}
for _, node in ipairs(live) do
  local kv = redis.call('HGETALL', base .. 'n:' .. node .. ':a:' .. app)
  for j = 1, #kv, 2 do
    local name = kv[j]
    if string.sub(name, 1, #prefix) == prefix then
      if counts[name] == nil then
        counts[name] = 0
        table.insert(names, name)
      end
      counts[name] = counts[name] + tonumber(kv[j + 1])
    end
  end
end
local out = {}
for _, name in ipairs(names) do
  local users = 0
  if string.sub(name, 1, 9) == 'presence-' then
    users = redis.call('HLEN', base .. 'p:' .. app .. ':' .. name .. ':u')
  end
  table.insert(out, name)
  table.insert(out, counts[name])
  table.insert(out, users)
end
return out
"""
)

# KEYS: nodes. ARGV: base, timeout ms, app, channel. Returns {subscriptions, presence users}.
CHANNEL = (
    _LIVE
    + """
local base, app, name = ARGV[1], ARGV[3], ARGV[4]
local count = 0
for _, node in ipairs(live) do
  count = count + tonumber(redis.call('HGET', base .. 'n:' .. node .. ':a:' .. app, name) or '0')
end
return {count, redis.call('HLEN', base .. 'p:' .. app .. ':' .. name .. ':u')}
"""
)

# KEYS: nodes. ARGV: base, timeout ms, app. Returns the app's connections on live nodes.
CONNECTIONS = (
    _LIVE
    + """
local total = 0
for _, node in ipairs(live) do
  total = total + tonumber(redis.call('HGET', ARGV[1] .. 'n:' .. node .. ':conns', ARGV[3]) or '0')
end
return total
"""
)


# KEYS: sequence, records. ARGV: pub/sub channel, message head, event JSON without its closing
# brace, record JSON without its opening brace, max events, max age ms.
# Assigns the next id, stores the record and publishes the finished WebSocket text frame (so
# ids and delivery order agree on every node); returns the id.
HISTORY_PUBLISH = """
local id = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], '{"id":' .. id .. ',' .. ARGV[4])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
local json = ARGV[3] .. ',"id":' .. id .. '}'
local n = #json
local header
if n < 126 then
  header = string.char(129, n)
elseif n < 65536 then
  header = string.char(129, 126, math.floor(n / 256), n % 256)
else
  local bytes = {}
  for shift = 7, 0, -1 do
    table.insert(bytes, math.floor(n / 256 ^ shift) % 256)
  end
  header = string.char(129, 127, unpack(bytes))
end
redis.call('PUBLISH', ARGV[1], ARGV[2] .. header .. json)
return id
"""


def sha(script: str) -> str:
    """The SHA1 Redis names a loaded script by (``EVALSHA``)."""
    return hashlib.sha1(script.encode()).hexdigest()
