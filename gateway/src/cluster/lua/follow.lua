-- follow: KEYS meta, stream, dedup, presence users
-- ARGV sample_max
-- Returns {epoch, last_offset, stream_last_id, presence_count, {users}}.
local meta, stream, dedup, pu = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sample_max = tonumber(ARGV[1]) or 0

local epoch, last = ensure_meta(meta, stream, dedup, true)
touch(meta, stream)
local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
local top_id = top and top[1] or (int(last) .. '-0')
local count = redis.call('HLEN', pu)
local sample = {}
if count > 0 and sample_max > 0 then
  sample = redis.call('HRANDFIELD', pu, sample_max)
end
return {epoch, last, top_id, count, sample}
