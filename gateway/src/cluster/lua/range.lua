-- read_range: KEYS meta, stream, dedup
-- ARGV epoch, after, before (0 = no bound), limit, newest ('1'/'0')
-- Messages have the IDs `o-0` and offsets are dense (each offset is taken
-- by exactly one message), so the messages in range are known before
-- reading: one XRANGE with COUNT, then exact-ID lookups if other entries
-- crowded it out.
-- Returns {epoch ('' if the room has none), last_offset, covered_from,
--          more (1/0), {entries, oldest first}}.
local meta, stream, dedup = KEYS[1], KEYS[2], KEYS[3]
local want = ARGV[1]
local after = tonumber(ARGV[2]) or 0
local before = tonumber(ARGV[3]) or 0
local limit = tonumber(ARGV[4]) or 0
local newest = ARGV[5] == '1'

local epoch, last = ensure_meta(meta, stream, dedup, false)
if not epoch then
  return {'', 0, 1, 0, {}}
end
local covered = last + 1
local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
if first then
  local ms = id_ms(first[1])
  if ms then
    if field(first[2], 't') == 'm' then
      covered = ms
    else
      covered = ms + 1
    end
  end
end
if want ~= epoch then
  return {epoch, last, covered, 0, {}}
end

local lo = math.max(after + 1, covered)
local hi = last
if before > 0 then
  hi = math.min(hi, before - 1)
end
if lo > hi or limit <= 0 then
  return {epoch, last, covered, (lo <= hi) and 1 or 0, {}}
end
local n = math.min(limit, hi - lo + 1)
local a, b, more
if newest then
  a, b = hi - n + 1, hi
  more = a > lo
else
  a, b = lo, lo + n - 1
  more = b < hi
end

local out = {}
local count = 2 * n + 16
local scan = redis.call('XRANGE', stream, int(a) .. '-0', int(b) .. '-0', 'COUNT', count)
for _, e in ipairs(scan) do
  if field(e[2], 't') == 'm' then
    out[#out + 1] = e
  end
end
if #out < n and #scan == count then
  local from = (id_ms(scan[#scan][1]) or b) + 1
  for o = from, b do
    local id = int(o) .. '-0'
    local e = redis.call('XRANGE', stream, id, id)[1]
    if e and field(e[2], 't') == 'm' then
      out[#out + 1] = e
    end
  end
end
return {epoch, last, covered, more and 1 or 0, out}
