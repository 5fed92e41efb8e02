"""The Lua script that admits a whole batch in one Redis round trip, atomically.

Redis runs a script alone, so replicas calling it concurrently are serialized and none can
overshoot. Time is the server's ``TIME`` (one clock for every replica), read once per call:
all of a batch's admissions share one timestamp. ``ARGV[1]`` may carry a time override in
microseconds; only tests set it (see ``RedisStore``'s ``clock``), production passes ``''``.

Each guardrail keeps all its keys in one hash (and, for a sliding window, one log), so a batch
costs a handful of Redis commands per guardrail however many users it touches — per-user keys
would cost two or three commands per user, which measured ~8 us each inside Redis.

- ``KEYS[1]``: limit overrides, a hash ``guardrail name -> limit in units``.
- per guardrail, its *counts* hash: field ``"k" .. key`` (``"k"`` alone when global) holds the
  use in units. Fixed window: field ``w`` is the window index; a later window unlinks the hash
  and starts afresh. Sliding window: field ``n`` numbers log entries; the hash is followed in
  KEYS by its *log*, a sorted set of ``"<n>:<cost>:<key>"`` scored by timestamp. Each call
  moves entries that have left the window out of the log and off their key's count, so a
  count is always the sum of its key's entries in ``(now - window, now]``; keys whose count
  reaches 0 are deleted. Both keys expire a window after their last admission.
- ``ARGV[2]``: JSON (decoded by Redis's cjson) ``[guards, slots, items]``, three flat arrays:
  guards = G x (name, sliding 0|1, window us, declared limit, refusal bit, position of its
  first key in KEYS); slots = S x (guard 1..G, key); items = N x (m, m x (slot, cost)). One
  JSON argument rather than hundreds: redis-py packs each argument in Python (~0.7 us each).

Numbers are integer units in Lua doubles (exact below 2**53), written with ``%.0f`` since Lua
5.1's ``tostring`` keeps 14 significant digits. Returns, per item, the sum of the refusal bits
of the guardrails that refused it (0 = admitted).
"""

from __future__ import annotations

ADMIT = """
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function fmt(x) return string.format('%.0f', x) end
local now_s = fmt(now)
-- a command over a long list, in chunks: unpack() is bounded by Lua's C stack
local function chunked(command, key, list)
  local replies = {}
  for from = 1, #list, 4000 do
    local reply = redis.call(command, key, unpack(list, from, math.min(from + 3999, #list)))
    if type(reply) == 'table' then
      for i = 1, #reply do replies[#replies + 1] = reply[i] end
    end
  end
  return replies
end

local batch = cjson.decode(ARGV[2])
local spec, guards, names = batch[1], {}, {}
for g = 1, #spec / 6 do names[g] = spec[6 * g - 5] end
local overrides = redis.call('HMGET', KEYS[1], unpack(names))
for g = 1, #names do
  local at = 6 * g - 5
  guards[g] = {sliding = spec[at + 1] == 1, window = spec[at + 2],
               limit = tonumber(overrides[g]) or spec[at + 3], bit = spec[at + 4],
               counts = KEYS[spec[at + 5]], log = KEYS[spec[at + 5] + 1], slots = {}}
end

spec = batch[2]
local slots = {}
for s = 1, #spec / 2 do
  local guard = guards[spec[2 * s - 1]]
  local slot = {guard = guard, field = 'k' .. spec[2 * s], added = 0}
  slots[s] = slot
  guard.slots[#guard.slots + 1] = slot
end

for g = 1, #guards do
  local guard = guards[g]
  local fields = {guard.sliding and 'n' or 'w'}
  for i, slot in ipairs(guard.slots) do fields[i + 1] = slot.field end
  local saved = chunked('HMGET', guard.counts, fields)
  for i, slot in ipairs(guard.slots) do slot.used = tonumber(saved[i + 1]) or 0 end
  if not guard.sliding then
    local index = math.floor(now / guard.window)
    local w = tonumber(saved[1])
    if w and w >= index then  -- a later index stays: a clock step back reopens nothing
      guard.window_index = w
    else
      guard.window_index = index
      if w then redis.call('UNLINK', guard.counts) end
      for _, slot in ipairs(guard.slots) do slot.used = 0 end
    end
  elseif redis.call('EXISTS', guard.log) == 0 then  -- the log is the truth: none, no use
    if saved[1] then redis.call('UNLINK', guard.counts) end
    guard.seq = 0
    for _, slot in ipairs(guard.slots) do slot.used = 0 end
  else
    guard.seq = tonumber(saved[1]) or 0
    local cutoff = now - guard.window
    local gone = redis.call('ZRANGEBYSCORE', guard.log, '-inf', cutoff)
    if #gone > 0 then
      redis.call('ZREMRANGEBYSCORE', guard.log, '-inf', cutoff)
      local by_field, others, other_fields = {}, {}, {}
      for _, slot in ipairs(guard.slots) do by_field[slot.field] = slot end
      for i = 1, #gone do
        local cost, key = string.match(gone[i], '^%d+:(%d+):(.*)$')
        local field = 'k' .. key
        local slot = by_field[field]
        if slot then
          slot.used = slot.used - tonumber(cost)
          slot.pruned = true
        else
          if not others[field] then
            others[field] = 0
            other_fields[#other_fields + 1] = field
          end
          others[field] = others[field] + tonumber(cost)
        end
      end
      if #other_fields > 0 then  -- keys not in this batch lose their expired entries too
        local sums = chunked('HMGET', guard.counts, other_fields)
        local set, del = {}, {}
        for i, field in ipairs(other_fields) do
          local left = (tonumber(sums[i]) or 0) - others[field]
          if left > 0 then
            set[#set + 1] = field
            set[#set + 1] = fmt(left)
          else
            del[#del + 1] = field
          end
        end
        if #set > 0 then chunked('HSET', guard.counts, set) end
        if #del > 0 then chunked('HDEL', guard.counts, del) end
      end
    end
  end
end

local items, out, p = batch[3], {}, 1
while p <= #items do
  local m, refused = items[p], 0
  for j = p + 1, p + 2 * m, 2 do
    local slot = slots[items[j]]
    if slot.used + items[j + 1] > slot.guard.limit then refused = refused + slot.guard.bit end
  end
  if refused == 0 then
    for j = p + 1, p + 2 * m, 2 do
      local slot = slots[items[j]]
      slot.used = slot.used + items[j + 1]
      slot.added = slot.added + items[j + 1]
    end
  end
  out[#out + 1] = refused
  p = p + 2 * m + 1
end

for g = 1, #guards do
  local guard = guards[g]
  local set, del, entries = {}, {}, {}
  for _, slot in ipairs(guard.slots) do
    if slot.added > 0 or (slot.pruned and slot.used > 0) then
      set[#set + 1] = slot.field
      set[#set + 1] = fmt(slot.used)
    elseif slot.pruned then
      del[#del + 1] = slot.field
    end
    if slot.added > 0 and guard.sliding then
      guard.seq = guard.seq + 1
      entries[#entries + 1] = now_s
      entries[#entries + 1] = fmt(guard.seq) .. ':' .. fmt(slot.added) .. ':'
                              .. string.sub(slot.field, 2)
    end
  end
  if #del > 0 then chunked('HDEL', guard.counts, del) end
  if #entries > 0 then
    local ttl = fmt(math.ceil(guard.window / 1000) + 1)
    set[#set + 1] = 'n'
    set[#set + 1] = fmt(guard.seq)
    chunked('HSET', guard.counts, set)
    chunked('ZADD', guard.log, entries)
    redis.call('PEXPIRE', guard.counts, ttl)
    redis.call('PEXPIRE', guard.log, ttl)
  elseif #set > 0 and not guard.sliding then
    set[#set + 1] = 'w'
    set[#set + 1] = fmt(guard.window_index)
    chunked('HSET', guard.counts, set)
    local ends = (guard.window_index + 1) * guard.window
    redis.call('PEXPIRE', guard.counts, fmt(math.ceil((ends - now) / 1000) + 1))
  elseif #set > 0 then
    chunked('HSET', guard.counts, set)
  end
end
return out
"""
