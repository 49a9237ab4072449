"""The Lua scripts the Redis broker runs, and their SHA1 digests.

Each runs atomically in Redis, so the history and the live stream never disagree. Every key a
script is given, and the pub/sub channel it publishes on, carries the channel's hash tag
``{channel}`` (see ``redis_keys.py``): one slot, as a script on Redis Cluster must touch. On a
cluster the message goes out with ``SPUBLISH`` on the shard channel
(:data:`SHARDED_PUBLISH_STORED`), which Redis accepts from a script whose keys share the
channel's slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Script:
    source: bytes
    sha: bytes = field(init=False, compare=False)
    """The name Redis gives it, computed once: every stored publish sends it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source).hexdigest().encode())


# Append to history and publish, atomically. KEYS: offset counter, stream, epoch, and (only when
# the caller gave one) the idempotency key. ARGV: max length, ttl (ms), the pub/sub channel (the
# same for every publish to a channel, so a node encodes them once: StreamHistory), then the JSON
# object body, the envelope header, a nonce kept in the stream entry (field "n") so that a
# publish whose reply was lost can be looked up instead of retried blindly, and "1" when the
# caller asks the keys' expiry to be renewed. The channel is no key (nothing is stored under
# it), so it is not in KEYS: on a cluster a slot being migrated answers TRYAGAIN to a script
# whose keys do not all exist, which a channel never does. Returns {offset, epoch}.
#
# A history that starts anew takes as its epoch the first 8 hex digits of the SHA1 of the
# publish's nonce: nonces are unique (node id, a random salt per process, counter), so epochs
# differ from a channel's earlier ones as random ones would, and no publish carries a candidate
# it almost never uses.
#
# The three keys expire together, ttl after the last publish to within a second (a tenth of a
# ttl under ten seconds): each node asks for the renewal at most once per such window and
# channel (StreamHistory), so a busy channel pays no expiry command per publish. A key this
# script creates always gets its expiry at once: a new history, and a stream evicted on its own
# (NOMKSTREAM finds it gone), so no key outlives its channel for want of a renewal.
PUBLISH_STORED = Script(b"""
if #KEYS > 3 then
  local done = redis.call('GET', KEYS[4])
  if done then
    local offset, epoch = string.match(done, '^(%d+) (.+)$')
    return {tonumber(offset), epoch}
  end
end
local renew = ARGV[7] == '1'
local offset = redis.call('INCR', KEYS[1])
local epoch = false
if offset > 1 then epoch = redis.call('GET', KEYS[3]) end
if not epoch then
  -- A new history (or its counter or epoch was lost, e.g. evicted): drop what is left of the
  -- old one, so no entry is ever labelled with an epoch it was not stored in.
  epoch = string.sub(redis.sha1hex(ARGV[6]), 1, 8)
  redis.call('SET', KEYS[3], epoch)
  redis.call('DEL', KEYS[2])
  renew = true
end
local body = '{"id":' .. offset .. ',"epoch":"' .. epoch .. '",' .. string.sub(ARGV[4], 2)
local id, max, nonce = '0-' .. offset, ARGV[1], ARGV[6]
if not redis.call('XADD', KEYS[2], 'NOMKSTREAM', 'MAXLEN', '~', max, id, 'd', body, 'n', nonce) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', max, id, 'd', body, 'n', nonce)
  renew = true
end
if renew then
  local ttl = ARGV[2]
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
redis.call('PUBLISH', ARGV[3], ARGV[5] .. '\\n' .. body)
if #KEYS > 3 then redis.call('SET', KEYS[4], offset .. ' ' .. epoch, 'EX', 120) end
return {offset, epoch}
""")

# Read what a reader missed, from the newest end. KEYS: offset counter, stream, epoch. ARGV: the
# reader's offset (-1: none, give the latest), its epoch ("" if none), the limit. Returns {top,
# epoch, entries}: the newest limit+1 entries after the reader's start (see history.read_start),
# newest first, so the cost is what was missed and not the size of the history.
READ_HISTORY = Script(b"""
local top = tonumber(redis.call('GET', KEYS[1]) or '0')
local epoch = redis.call('GET', KEYS[3]) or ''
local since = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
if since < 0 then
  if limit <= 0 then return {top, epoch, {}} end
  return {top, epoch, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)}
end
local start = since
if (ARGV[2] ~= '' and ARGV[2] ~= epoch) or since > top then start = 0 end
return {top, epoch, redis.call('XREVRANGE', KEYS[2], '+', '0-' .. (start + 1), 'COUNT', limit + 1)}
""")

# Which of these publishes were stored? KEYS: stream, epoch. ARGV: how many of the newest
# entries to search, then the nonces. Returns the epoch, the oldest offset still kept (0: none),
# then {nonce, offset} pairs for those found: one scan of the stream's tail answers every
# publish whose reply one lost connection took with it.
FIND_PUBLISHES = Script(b"""
local wanted = {}
for i = 2, #ARGV do wanted[ARGV[i]] = true end
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local found = {redis.call('GET', KEYS[2]) or '', oldest and tonumber(string.sub(oldest[1], 3)) or 0}
local entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1])
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'n' and wanted[fields[i + 1]] then
      table.insert(found, fields[i + 1])
      table.insert(found, tonumber(string.sub(entry[1], 3)))
    end
  end
end
return found
""")

SHARDED_PUBLISH_STORED = Script(
    PUBLISH_STORED.source.replace(b"redis.call('PUBLISH'", b"redis.call('SPUBLISH'")
)
"""``PUBLISH_STORED`` for Redis Cluster: the same steps, published on the shard channel."""
assert SHARDED_PUBLISH_STORED != PUBLISH_STORED

SCRIPTS = (PUBLISH_STORED, READ_HISTORY, FIND_PUBLISHES)
"""The scripts of the single-Redis broker, loaded when it opens."""
