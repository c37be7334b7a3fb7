-- publish: KEYS meta, stream, dedup, persist
-- ARGV room, publisher, payload, content_type ('' = none),
--      idempotency_key ('' = none), ts, maxlen, dedup_limit, persist ('1'/'0')
-- Returns {epoch, offset, duplicate (1/0)}.
local meta, stream, dedup, persist = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local room, publisher, payload, ctype, key, ts =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local maxlen = tonumber(ARGV[7]) or 0
local dedup_limit = tonumber(ARGV[8]) or 0
local do_persist = ARGV[9] == '1'

local epoch, last = ensure_meta(meta, stream, dedup, true)

local member = nil
if key ~= '' and dedup_limit > 0 then
  member = publisher .. '\0' .. key
  local seen = redis.call('ZSCORE', dedup, member)
  if seen then
    return {epoch, tonumber(seen), 1}
  end
end

local function xadd(off)
  local args = {'XADD', stream}
  if maxlen > 0 then
    args[#args + 1] = 'MAXLEN'
    args[#args + 1] = '~'
    args[#args + 1] = int(maxlen)
  end
  args[#args + 1] = int(off) .. '-0'
  for _, v in ipairs({'t', 'm', 'e', epoch, 'u', publisher, 'd', payload}) do
    args[#args + 1] = v
  end
  if ctype ~= '' then
    args[#args + 1] = 'c'
    args[#args + 1] = ctype
  end
  args[#args + 1] = 'ts'
  args[#args + 1] = ts
  return args
end

-- The stream is written first, so a failure leaves nothing half done.
local off = last + 1
local added = redis.pcall(unpack(xadd(off)))
if type(added) == 'table' and added.err then
  -- The stream's top is ahead of the meta (never written so by these
  -- scripts): continue after the top rather than fail the room forever.
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  local ms = top and id_ms(top[1])
  if not ms or ms < off then
    return redis.error_reply(added.err)
  end
  off = ms + 1
  redis.call(unpack(xadd(off)))
end

notify(stream)
redis.call('HSET', meta, 'o', int(off))
redis.call('PERSIST', meta)
redis.call('PERSIST', stream)
if member then
  redis.call('ZADD', dedup, int(off), member)
  redis.call('ZREMRANGEBYRANK', dedup, 0, -(dedup_limit + 1))
end
if do_persist then
  local args = {'XADD', persist, 'MAXLEN', '~', '1000000', '*',
    'r', room, 'e', epoch, 'o', int(off), 'u', publisher, 'd', payload}
  if ctype ~= '' then
    args[#args + 1] = 'c'
    args[#args + 1] = ctype
  end
  args[#args + 1] = 'ts'
  args[#args + 1] = ts
  redis.call(unpack(args))
end
return {epoch, off, 0}
