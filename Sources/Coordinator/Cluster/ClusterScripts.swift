/// The Lua scripts cluster mode runs in Redis. Each shared decision is one script: atomic, and
/// timed by Redis `TIME` — never by a node's clock, so skewed nodes cannot skew limits or breakers.
///
/// Times inside scripts are microseconds (GCRA, sliding window) or milliseconds (breakers,
/// membership) since the Unix epoch as Redis sees it; both fit exactly in Lua's doubles.
public enum ClusterScripts {
    /// GCRA over every limit of a policy, all-or-nothing.
    ///
    /// `KEYS[i]`: the TAT key of limit *i*. `ARGV[1]`: cost (≥ 0). `ARGV[2i]`: emission interval
    /// T in µs (may be fractional), `ARGV[2i+1]`: tolerance burst·T in µs.
    /// Returns `{allowed, binding (0-based), remaining, resetAfterUs, retryAfterUs (-1 = never), nowUs}`.
    public static let gcra = #"""
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local cost = tonumber(ARGV[1])
    local n = #KEYS
    local tats = {}
    local allowed = 1
    local retry = 0
    local binding = 0
    for i = 1, n do
      local T = tonumber(ARGV[2 * i])
      local tau = tonumber(ARGV[2 * i + 1])
      local tat = tonumber(redis.call('GET', KEYS[i]) or now)
      if tat < now then tat = now end
      tats[i] = tat
      local newTat = tat + cost * T
      if newTat - now > tau then
        local wait
        if cost * T > tau then wait = -1 else wait = newTat - now - tau end
        if allowed == 1 or wait == -1 or (retry ~= -1 and wait > retry) then
          retry = wait
          binding = i - 1
        end
        allowed = 0
      end
    end
    if allowed == 0 then
      local i = binding + 1
      local T = tonumber(ARGV[2 * i])
      local tau = tonumber(ARGV[2 * i + 1])
      local remaining = math.floor((tau - (tats[i] - now)) / T)
      if remaining < 0 then remaining = 0 end
      return {0, binding, remaining, math.ceil(tats[i] - now), math.ceil(retry), now}
    end
    local best = -1
    local bestRemaining = 0
    local bestReset = 0
    for i = 1, n do
      local T = tonumber(ARGV[2 * i])
      local tau = tonumber(ARGV[2 * i + 1])
      local newTat = tats[i] + cost * T
      if cost > 0 then
        redis.call('SET', KEYS[i], string.format('%.17g', newTat), 'PX', math.ceil((newTat - now) / 1000) + 1)
      end
      local remaining = math.floor((tau - (newTat - now)) / T)
      if remaining < 0 then remaining = 0 end
      local reset = newTat - now
      if best == -1 or remaining < bestRemaining or (remaining == bestRemaining and reset > bestReset) then
        best = i - 1
        bestRemaining = remaining
        bestReset = reset
      end
    end
    return {1, best, bestRemaining, math.ceil(bestReset), 0, now}
    """#

    /// Sliding-window counters over every limit of a policy, all-or-nothing.
    ///
    /// `KEYS[i]`: a hash (`w` window index, `cur`, `prev`) per limit. `ARGV[1]`: cost.
    /// `ARGV[2i]`: rate, `ARGV[2i+1]`: period in µs.
    /// Returns `{allowed, binding, remaining, resetAfterUs, retryAfterUs (-1 = never), nowUs}`.
    public static let slidingWindow = #"""
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local cost = tonumber(ARGV[1])
    local n = #KEYS
    local state = {}
    local allowed = 1
    local retry = 0
    local binding = 0
    for i = 1, n do
      local rate = tonumber(ARGV[2 * i])
      local P = tonumber(ARGV[2 * i + 1])
      local win = math.floor(now / P)
      local h = redis.call('HMGET', KEYS[i], 'w', 'cur', 'prev')
      local w = tonumber(h[1] or win)
      local cur = tonumber(h[2] or 0)
      local prev = tonumber(h[3] or 0)
      if w == win - 1 then prev = cur; cur = 0
      elseif w < win - 1 then prev = 0; cur = 0 end
      local e = now - win * P
      local estimate = prev * (P - e) / P + cur
      state[i] = {win, cur, prev, estimate, rate, P, e}
      if estimate + cost > rate then
        local wait
        if cost > rate then
          wait = -1
        else
          local room = rate - cur - cost
          if room >= 0 and prev > 0 then
            wait = P * (1 - room / prev) - e
          else
            local need = 0
            if cur > 0 then need = P * (1 - (rate - cost) / cur) end
            if need < 0 then need = 0 end
            wait = (P - e) + need
          end
          if wait < 0 then wait = 0 end
        end
        if allowed == 1 or wait == -1 or (retry ~= -1 and wait > retry) then
          retry = wait
          binding = i - 1
        end
        allowed = 0
      end
    end
    local function remainingOf(s, extra)
      local r = math.floor(s[5] - s[4] - extra)
      if r < 0 then r = 0 end
      return r
    end
    local function resetOf(s, extra)
      if s[2] + extra > 0 then return (s[6] - s[7]) + s[6] end
      if s[3] > 0 then return s[6] - s[7] end
      return 0
    end
    if allowed == 0 then
      local s = state[binding + 1]
      return {0, binding, remainingOf(s, 0), math.ceil(resetOf(s, 0)), math.ceil(retry), now}
    end
    local best = -1
    local bestRemaining = 0
    local bestReset = 0
    for i = 1, n do
      local s = state[i]
      if cost > 0 then
        redis.call('HSET', KEYS[i], 'w', s[1], 'cur', s[2] + cost, 'prev', s[3])
        redis.call('PEXPIRE', KEYS[i], math.ceil(2 * s[6] / 1000) + 1)
      end
      local remaining = remainingOf(s, cost)
      local reset = resetOf(s, cost)
      if best == -1 or remaining < bestRemaining or (remaining == bestRemaining and reset > bestReset) then
        best = i - 1
        bestRemaining = remaining
        bestReset = reset
      end
    end
    return {1, best, bestRemaining, math.ceil(bestReset), 0, now}
    """#

    /// Compare-and-set of a shared breaker's authoritative state, and its announcement, in one step.
    ///
    /// `KEYS[1]`: the breaker's state hash. `ARGV`: expected version (`-1`: unconditional, for operator
    /// commands), new state, open wait in ms (0 unless the new state is open), reason, origin node,
    /// channel, message to publish (signed by the origin; it names the new version, expected + 1),
    /// consecutive openings. Moving an open breaker to half-open before its `openUntil` (by Redis time)
    /// is refused like a stale version.
    /// Returns `{applied (0/1), version, state, openUntilMs, sinceMs, nowMs, reason, origin, openings}` —
    /// on a failed compare, the state that is there, so the caller adopts it instead.
    public static let breakerTransition = #"""
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local h = redis.call('HMGET', KEYS[1], 'version', 'state', 'openUntil', 'since', 'reason', 'origin', 'openings')
    local version = tonumber(h[1] or 0)
    local function current()
      return {0, version, h[2] or 'closed', tonumber(h[3] or 0), tonumber(h[4] or 0), now,
        h[5] or 'reconfigured', h[6] or '', tonumber(h[7] or 0)}
    end
    if ARGV[1] ~= '-1' and version ~= tonumber(ARGV[1]) then return current() end
    if ARGV[2] == 'half_open' and h[2] == 'open' and now < tonumber(h[3] or 0) then return current() end
    local openUntil = 0
    if ARGV[2] == 'open' then openUntil = now + tonumber(ARGV[3]) end
    version = version + 1
    redis.call('HSET', KEYS[1], 'version', version, 'state', ARGV[2], 'openUntil', openUntil,
      'reason', ARGV[4], 'origin', ARGV[5], 'since', now, 'openings', tonumber(ARGV[8] or 0))
    redis.call('PUBLISH', ARGV[6], ARGV[7])
    return {1, version, ARGV[2], openUntil, now, now, ARGV[4], ARGV[5], tonumber(ARGV[8] or 0)}
    """#

    /// Reads a shared breaker's state with Redis's time:
    /// `{version, state, openUntilMs, sinceMs, nowMs, reason, origin, openings}`.
    public static let breakerSnapshot = #"""
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local h = redis.call('HMGET', KEYS[1], 'version', 'state', 'openUntil', 'since', 'reason', 'origin', 'openings')
    return {tonumber(h[1] or 0), h[2] or 'closed', tonumber(h[3] or 0), tonumber(h[4] or 0), now,
      h[5] or 'reconfigured', h[6] or '', tonumber(h[7] or 0)}
    """#

    /// A trip vote for `quorum(n)` sharing: records this node's vote, forgets votes older than the
    /// window, and says how many distinct nodes voted within it.
    ///
    /// `KEYS[1]`: the votes sorted set. `ARGV`: node id, window in ms.
    /// Returns `{distinctVoters, nowMs}`.
    public static let tripVote = #"""
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local window = tonumber(ARGV[2])
    redis.call('ZADD', KEYS[1], now, ARGV[1])
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
    redis.call('PEXPIRE', KEYS[1], window + 1000)
    return {redis.call('ZCARD', KEYS[1]), now}
    """#

    /// Takes one of the `permitted` probe slots of a half-open round, cluster-wide.
    ///
    /// `KEYS[1]`: the round's hash (one per opening: the open record's version). `ARGV`: permitted, TTL ms.
    /// Returns the number of probes granted so far including this one, or 0 when all are taken.
    public static let probeAcquire = #"""
    local granted = redis.call('HINCRBY', KEYS[1], 'granted', 1)
    if granted > tonumber(ARGV[1]) then
      redis.call('HINCRBY', KEYS[1], 'granted', -1)
      return 0
    end
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
    return granted
    """#

    /// Gives an unused probe slot back (an `ignored` probe). `KEYS[1]`: the round's hash.
    public static let probeReturn = #"""
    local granted = tonumber(redis.call('HGET', KEYS[1], 'granted') or 0)
    local done = tonumber(redis.call('HGET', KEYS[1], 'done') or 0)
    if granted > done then redis.call('HINCRBY', KEYS[1], 'granted', -1) return 1 end
    return 0
    """#

    /// Reports one probe's outcome. `KEYS[1]`: the round's hash. `ARGV`: failed (0/1), slow (0/1), TTL ms.
    /// Returns `{done, failed, slow}` after this report: exactly one reporter sees `done` reach the
    /// permitted count, and proposes the round's verdict.
    public static let probeReport = #"""
    local done = redis.call('HINCRBY', KEYS[1], 'done', 1)
    local failed = redis.call('HINCRBY', KEYS[1], 'failed', tonumber(ARGV[1]))
    local slow = redis.call('HINCRBY', KEYS[1], 'slow', tonumber(ARGV[2]))
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
    return {done, failed, slow}
    """#

    /// Approximate limits: adds this node's consumption to a fixed window's cluster counter and reads
    /// the previous window's. `KEYS`: current window counter, previous window counter. `ARGV`: amount,
    /// TTL ms. Returns `{currentTotal, previousTotal}`.
    public static let approximateSync = #"""
    local total = redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
    local previous = tonumber(redis.call('GET', KEYS[2]) or 0)
    return {total, previous}
    """#

    /// `aggregate` sharing: stores this node's window counters with Redis's time and returns every
    /// node's counters that are fresh enough.
    ///
    /// `KEYS[1]`: the counters hash. `ARGV`: node id, "calls,failed,slow,epoch", stale-after ms.
    /// Returns `{nowMs, node1, counters1, at1, node2, …}`.
    public static let aggregateFlush = #"""
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local stale = tonumber(ARGV[3])
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ',' .. now)
    redis.call('PEXPIRE', KEYS[1], stale * 10)
    local all = redis.call('HGETALL', KEYS[1])
    local out = {now}
    for i = 1, #all, 2 do
      local at = tonumber(string.match(all[i + 1], ',(%d+)$') or 0)
      if now - at <= stale then
        out[#out + 1] = all[i]
        out[#out + 1] = all[i + 1]
      else
        redis.call('HDEL', KEYS[1], all[i])
      end
    end
    return out
    """#

    /// Reads a second-level token cache entry, unless its token id is in the revocation set (then
    /// the entry is deleted).
    ///
    /// `KEYS[1]`: the entry, `KEYS[2]`: the revocation set. Returns `{record, mac}` or nil.
    public static let tokenCacheGet = #"""
    local v = redis.call('HMGET', KEYS[1], 'id', 'record', 'mac')
    if not v[1] or not v[2] or not v[3] then return false end
    if redis.call('SISMEMBER', KEYS[2], v[1]) == 1 then
      redis.call('DEL', KEYS[1])
      return false
    end
    return {v[2], v[3]}
    """#

    /// Fills a second-level token cache entry unless the token is revoked: a fill that read the
    /// database before a revocation committed can never put the revoked token back.
    ///
    /// `KEYS[1]`: the entry, `KEYS[2]`: the revocation set. `ARGV`: token id, record, TTL in ms, MAC
    /// of the record (HMAC with the cluster secret). Returns 1 when stored, 0 when the token is in the
    /// revocation set.
    public static let tokenCacheFill = #"""
    if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 0 end
    redis.call('HSET', KEYS[1], 'id', ARGV[1], 'record', ARGV[2], 'mac', ARGV[4])
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
    """#

    /// Revokes a token in Redis: adds it to the revocation set and drops its cache entry, atomically.
    ///
    /// `KEYS[1]`: the entry, `KEYS[2]`: the revocation set. `ARGV[1]`: token id.
    public static let tokenRevoke = #"""
    redis.call('SADD', KEYS[2], ARGV[1])
    redis.call('DEL', KEYS[1])
    return 1
    """#

    /// Appends an audit event to the shared spool, idempotent by event id.
    ///
    /// `KEYS[1]`: the stream, `KEYS[2]`: the id → digest hash, `KEYS[3]`: node → entries waiting.
    /// `ARGV`: event id, content digest, event JSON, MAC of the JSON, node id. Returns 0 appended,
    /// 1 already spooled with the same content, 2 already spooled with other content.
    public static let auditSpoolAppend = #"""
    local d = redis.call('HGET', KEYS[2], ARGV[1])
    if d then
      if d == ARGV[2] then return 1 end
      return 2
    end
    redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'event', ARGV[3], 'mac', ARGV[4], 'node', ARGV[5])
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
    redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
    return 0
    """#

    /// Acknowledges a drained spool entry: XACK, XDEL, and forgets its id.
    ///
    /// `KEYS[1]`: the stream, `KEYS[2]`: the id hash, `KEYS[3]`: node → entries waiting. `ARGV`: group,
    /// entry id, event id ('' if unknown), node id ('' if unknown). Only an entry still in the stream
    /// is counted off, so a second acknowledgement changes nothing.
    public static let auditSpoolAck = #"""
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
    if redis.call('XDEL', KEYS[1], ARGV[2]) == 1 and ARGV[4] ~= '' then
      if redis.call('HINCRBY', KEYS[3], ARGV[4], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[4]) end
    end
    if ARGV[3] ~= '' then redis.call('HDEL', KEYS[2], ARGV[3]) end
    return 1
    """#

    /// Takes or renews the drain lock for `ARGV[1]` (node id) for `ARGV[2]` ms. Returns 1 if held.
    public static let lockAcquire = #"""
    local holder = redis.call('GET', KEYS[1])
    if holder == ARGV[1] then
      redis.call('PEXPIRE', KEYS[1], ARGV[2])
      return 1
    end
    if holder then return 0 end
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
    """#

    /// Releases the lock if `ARGV[1]` holds it.
    public static let lockRelease = #"""
    if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
    return 1
    """#

    /// Membership heartbeat: records this node with Redis's time, forgets members silent for longer
    /// than the liveness window, and returns the live set.
    ///
    /// `KEYS[1]`: members sorted set. `ARGV`: node id, liveness window in ms.
    /// Returns `{nowMs, node1, lastSeenMs1, node2, lastSeenMs2, …}`.
    public static let heartbeat = #"""
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local window = tonumber(ARGV[2])
    if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now, ARGV[1]) end
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
    local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    local out = {now}
    for i = 1, #live do out[#out + 1] = live[i] end
    return out
    """#
}

/// Names of the Redis keys and channels of one cluster. Every key carries a hash tag, so the keys
/// one script touches live in one slot.
public struct ClusterKeys: Sendable, Equatable {
    public let cluster: String

    public init(cluster: String) {
        self.cluster = cluster
    }

    /// Pub/sub channel of the cluster's bus.
    public var busChannel: String { "coord:\(cluster):bus" }
    /// Sorted set of members by last heartbeat.
    public var members: String { "coord:\(cluster):members" }
    /// TAT (GCRA) or counter hash (sliding window) of limit `index` of `policy` for `key`.
    public func limit(policy: String, key: String, index: Int) -> String { "coord:\(cluster):rl:{\(policy):\(key)}:\(index)" }
    /// Approximate-mode counter of limit `index` of `policy` for `key` in fixed window `window`.
    public func approximateCounter(policy: String, key: String, index: Int, window: Int64) -> String {
        "coord:\(cluster):ap:{\(policy):\(key)}:\(index):\(window)"
    }
    /// Authoritative state hash of breaker `name`.
    public func breakerState(_ name: String) -> String { "coord:\(cluster):br:{\(name)}:state" }
    /// Trip votes of breaker `name` (quorum sharing).
    public func breakerVotes(_ name: String) -> String { "coord:\(cluster):br:{\(name)}:votes" }
    /// Half-open probe round of breaker `name` opened at record version `round`.
    public func breakerProbeRound(_ name: String, round: UInt64) -> String { "coord:\(cluster):br:{\(name)}:round:\(round)" }
    /// Hash of shared configuration documents of `kind` (`policies`, `breakers`): name → JSON.
    public func sharedDocuments(_ kind: String) -> String { "coord:\(cluster):config:\(kind)" }
    /// Set of revoked token ids.
    public var revokedTokens: String { "coord:\(cluster):revoked" }
    /// Per-node window counters of breaker `name` (aggregate sharing).
    public func breakerCounters(_ name: String) -> String { "coord:\(cluster):br:{\(name)}:agg" }
    /// Second-level token cache entry (PostgreSQL store): hash `id`, `record` of the token whose
    /// secret hashes to `secretHashHex`, with a TTL.
    public func tokenCache(_ secretHashHex: String) -> String { "coord:\(cluster):tokcache:\(secretHashHex)" }
    /// Shared audit spool: a stream of events PostgreSQL could not take, drained through a consumer group.
    public var auditSpool: String { "coord:\(cluster):audit-spool" }
    /// Event id → content digest of every event in the shared audit spool (idempotency).
    public var auditSpoolIDs: String { "coord:\(cluster):audit-spool:ids" }
    /// Held (with a TTL) by the one node draining the shared audit spool, so events drain in order.
    public var auditSpoolLock: String { "coord:\(cluster):audit-spool:lock" }
    /// Node id → how many of its events wait in the shared audit spool (a node whose events wait there
    /// spools its new ones behind them, to keep its order).
    public var auditSpoolByNode: String { "coord:\(cluster):audit-spool:by-node" }
    /// Entries of the shared audit spool that could not be decoded, moved aside for an operator.
    public var auditSpoolDeadLetters: String { "coord:\(cluster):audit-spool:dead" }
}
