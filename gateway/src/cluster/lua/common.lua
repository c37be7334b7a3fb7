-- Shared helpers, prepended to every Herald script (see redis.rs).
--
-- Numbers never pass through Lua's default number-to-string conversion
-- ("%.14g"): offsets are formatted with int() and epochs stay strings.

local DAY = 86400

local function int(n)
  return string.format('%d', n)
end

-- "ms-seq" -> ms as a number, or nil.
local function id_ms(id)
  local ms = string.match(id, '^(%d+)%-%d+$')
  return ms and tonumber(ms)
end

-- The value of `name` in a stream entry's flat field list, or nil.
local function field(fields, name)
  if type(fields) ~= 'table' then
    return nil
  end
  for i = 1, #fields - 1, 2 do
    if fields[i] == name then
      return fields[i + 1]
    end
  end
  return nil
end

-- The room's epoch (a string) and last offset (a number).
-- Meta present: use it. Meta missing, stream present: restore the meta from
-- the stream's last entry (same epoch; the ms part of its ID is the last
-- offset). Both missing: when `create`, a new epoch from TIME in
-- microseconds, with a 24 h expiry until the first message; else nil.
local function ensure_meta(meta, stream, dedup, create)
  local m = redis.call('HMGET', meta, 'e', 'o')
  if m[1] then
    return m[1], tonumber(m[2]) or 0
  end
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if top then
    local e = field(top[2], 'e')
    local ms = id_ms(top[1])
    if e and ms then
      redis.call('HSET', meta, 'e', e, 'o', int(ms))
      local ttl = redis.call('PTTL', stream)
      if ttl > 0 then
        redis.call('PEXPIRE', meta, ttl)
      end
      return e, ms
    end
  end
  if not create then
    return nil, 0
  end
  -- An empty (or foreign) stream would make the new epoch's IDs collide,
  -- and old idempotency keys point at the old epoch's offsets.
  redis.call('DEL', stream, dedup)
  local t = redis.call('TIME')
  local e = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('HSET', meta, 'e', e, 'o', '0')
  redis.call('EXPIRE', meta, DAY)
  return e, 0
end

-- A room without any message yet lives 24 h past its last activity.
local function touch(meta, stream)
  if redis.call('TTL', meta) > 0 then
    redis.call('EXPIRE', meta, DAY)
    redis.call('EXPIRE', stream, DAY)
  end
end

-- Tells the readers that `stream` (herald:{room}:s) has a new entry: a
-- notice in one of 64 partition streams, chosen by the low bits of the
-- room name's FNV-1a hash (the low 32 bits of FNV-1a 64 need only the low
-- 32 bits of its basis and prime, so doubles compute them exactly). A
-- node blocks on the few partitions of its rooms, not on every room.
local NOTICE_PARTITIONS = 64
local function notify(stream)
  local room = string.sub(stream, 9, -4)
  local h = 2216829733
  for i = 1, #room do
    h = bit.bxor(h, string.byte(room, i)) % 4294967296
    h = (h * 435) % 4294967296
  end
  redis.call('XADD', 'herald:n:' .. (h % NOTICE_PARTITIONS), 'MAXLEN', '~', '100000', '*', 'r', room)
end

-- XADD a non-message entry after the last message (ID `<last>-*`): it sorts
-- after that message and never takes an offset. Returns the new ID.
local function add_event(stream, last, epoch, maxlen, fields)
  local args = {'XADD', stream}
  if maxlen > 0 then
    args[#args + 1] = 'MAXLEN'
    args[#args + 1] = '~'
    args[#args + 1] = int(maxlen)
  end
  args[#args + 1] = int(last) .. '-*'
  args[#args + 1] = 'e'
  args[#args + 1] = epoch
  for i = 1, #fields do
    args[#args + 1] = fields[i]
  end
  local id = redis.call(unpack(args))
  notify(stream)
  return id
end
