-- event (volatile message or typing): KEYS meta, stream, dedup
-- ARGV maxlen, then the entry's field/value pairs (without `e`).
-- Creates the room's epoch like follow when it has none.
-- Returns the new entry's ID.
local meta, stream, dedup = KEYS[1], KEYS[2], KEYS[3]
local maxlen = tonumber(ARGV[1]) or 0
local fields = {}
for i = 2, #ARGV do
  fields[#fields + 1] = ARGV[i]
end

local epoch, last = ensure_meta(meta, stream, dedup, true)
local id = add_event(stream, last, epoch, maxlen, fields)
touch(meta, stream)
return id
