-- reap a node: KEYS the node's rooms set, herald:nodes, the node's alive key
-- ARGV node, ts, maxlen, only_if_dead ('1'/'0'), budget (fields per call)
-- For each room the node has presence in, removes the node's `pn` fields
-- with the leave logic (a leave event, without origin, for each user whose
-- last node it was). Works in slices of `budget` fields so one call never
-- blocks Redis for long; a room leaves the set once it is clean.
-- Returns {fields removed, state}: state 1 = done (the node is forgotten),
-- 0 = more to do, -1 = skipped because the node is alive.
local node_rooms, nodes, alive = KEYS[1], KEYS[2], KEYS[3]
local node, ts = ARGV[1], ARGV[2]
local maxlen = tonumber(ARGV[3]) or 0
local only_if_dead = ARGV[4] == '1'
local budget = tonumber(ARGV[5]) or 1000

if only_if_dead and redis.call('EXISTS', alive) == 1 then
  return {0, -1}
end

local prefix = node .. '\0'
local pattern = string.gsub(node, '[%*%?%[%]\\]', '\\%0') .. '\0*'
local removed = 0

-- Returns true once the room holds nothing of the node.
local function reap_room(room)
  local base = 'herald:{' .. room .. '}:'
  local meta, stream, dedup = base .. 'm', base .. 's', base .. 'k'
  local pn, pu = base .. 'pn', base .. 'pu'
  local cursor = '0'
  repeat
    local r = redis.call('HSCAN', pn, cursor, 'MATCH', pattern, 'COUNT', 256)
    cursor = r[1]
    local kv = r[2]
    for i = 1, #kv - 1, 2 do
      local f = kv[i]
      if string.sub(f, 1, #prefix) == prefix and redis.call('HDEL', pn, f) == 1 then
        removed = removed + 1
        local user = string.sub(f, #prefix + 1)
        if redis.call('HINCRBY', pu, user, -1) <= 0 then
          redis.call('HDEL', pu, user)
          local count = redis.call('HLEN', pu)
          local epoch, last = ensure_meta(meta, stream, dedup, false)
          if epoch then
            add_event(stream, last, epoch, maxlen,
              {'t', 'p', 'u', user, 'a', '0', 'n', int(count), 'ts', ts})
            touch(meta, stream)
          end
        end
      end
    end
    if removed >= budget then
      return false
    end
  until cursor == '0'
  redis.call('HDEL', pn, node)
  redis.call('SREM', node_rooms, room)
  return true
end

while removed < budget do
  local rooms = redis.call('SRANDMEMBER', node_rooms, 64)
  if #rooms == 0 then
    break
  end
  for _, room in ipairs(rooms) do
    if not reap_room(room) then
      return {removed, 0}
    end
  end
end
if redis.call('SCARD', node_rooms) > 0 then
  return {removed, 0}
end
redis.call('DEL', node_rooms)
redis.call('SREM', nodes, node)
if not only_if_dead then
  redis.call('DEL', alive)
end
return {removed, 1}
