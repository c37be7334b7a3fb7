-- presence join/leave of one user on one node: KEYS meta, stream, dedup,
-- presence nodes (pn), presence users (pu), the node's rooms set
-- ARGV join ('1'/'0'), node, user, room, ts, maxlen, member ('' = none)
-- pn holds `node \0 user` -> 1, plus `node` -> how many users the node has
-- in the room (so the node's rooms set loses the room with its last user).
-- Returns {count of distinct users, 1 if an event was written else 0}.
local meta, stream, dedup, pn, pu, node_rooms =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local join = ARGV[1] == '1'
local node, user, room, ts = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local maxlen = tonumber(ARGV[6]) or 0
local member = ARGV[7]
local f = node .. '\0' .. user

local changed = false
if join then
  if redis.call('HSETNX', pn, f, 1) == 1 then
    redis.call('HINCRBY', pn, node, 1)
    redis.call('SADD', node_rooms, room)
    changed = redis.call('HINCRBY', pu, user, 1) == 1
  end
elseif redis.call('HDEL', pn, f) == 1 then
  if redis.call('HINCRBY', pn, node, -1) <= 0 then
    redis.call('HDEL', pn, node)
    redis.call('SREM', node_rooms, room)
  end
  if redis.call('HINCRBY', pu, user, -1) <= 0 then
    redis.call('HDEL', pu, user)
    changed = true
  end
end

local count = redis.call('HLEN', pu)
if not changed then
  return {count, 0}
end
local epoch, last = ensure_meta(meta, stream, dedup, true)
local fields = {'t', 'p', 'u', user, 'a', join and '1' or '0', 'n', int(count),
  'ts', ts, 'N', node}
if member ~= '' then
  fields[#fields + 1] = 'M'
  fields[#fields + 1] = member
end
add_event(stream, last, epoch, maxlen, fields)
touch(meta, stream)
return {count, 1}
