/// Counters of a cache's life.
public struct CacheStatistics: Sendable, Equatable, Hashable {
    /// Lookups that found a live value.
    public var hits: Int
    /// Lookups that found nothing or an expired value.
    public var misses: Int
    /// Values dropped to make room for another.
    public var evictions: Int
    /// Values dropped because they had expired.
    public var expirations: Int

    /// Creates statistics.
    @inlinable
    public init(hits: Int = 0, misses: Int = 0, evictions: Int = 0, expirations: Int = 0) {
        self.hits = hits
        self.misses = misses
        self.evictions = evictions
        self.expirations = expirations
    }
}

/// A bounded map with least-recently-used eviction and per-value expiry.
///
/// Every operation is O(1) (except `removeAll(where:)` / `removeExpired(now:)`, O(count)): an
/// intrusive doubly linked list threaded through an array of nodes addressed by index, a
/// `[Key: Int]` index, and a free list that reuses the slots of removed nodes, so steady-state
/// use allocates nothing. A value type; the owner serialises access. It never reads a clock.
///
/// A value is live while `now < expiresAt`. Expired values are removed lazily when looked up
/// (counting a miss and an expiration) or by `removeExpired(now:)`; until then they occupy room
/// and may be evicted as least recently used (counting an eviction, since `set` has no `now`).
public struct LRUCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    @usableFromInline
    struct Node: Sendable {
        /// `nil` while the node is on the free list.
        @usableFromInline var key: Key?
        @usableFromInline var value: Value?
        @usableFromInline var expiresAt: Instant
        /// Towards the most recently used end; -1 at the head.
        @usableFromInline var previous: Int
        /// Towards the least recently used end; -1 at the tail. Links the free list too.
        @usableFromInline var next: Int

        @inlinable
        init(key: Key, value: Value, expiresAt: Instant, previous: Int, next: Int) {
            self.key = key
            self.value = value
            self.expiresAt = expiresAt
            self.previous = previous
            self.next = next
        }
    }

    /// The most values held at once.
    public let capacity: Int
    /// Counters since creation (or the last `resetStatistics()`).
    @inlinable public var stats: CacheStatistics { statistics }
    @usableFromInline var statistics: CacheStatistics

    @usableFromInline var nodes: ContiguousArray<Node>
    @usableFromInline var index: [Key: Int]
    /// Most recently used node, or -1.
    @usableFromInline var head: Int
    /// Least recently used node, or -1.
    @usableFromInline var tail: Int
    /// First free node, or -1.
    @usableFromInline var free: Int

    /// Creates an empty cache holding at most `capacity` (≥ 1) values.
    public init(capacity: Int) {
        precondition(capacity >= 1, "LRUCache capacity must be at least 1")
        self.capacity = capacity
        statistics = CacheStatistics()
        nodes = []
        index = [:]
        head = -1
        tail = -1
        free = -1
    }

    /// How many values are held (expired ones included until removed).
    @inlinable public var count: Int { index.count }

    /// Whether the cache holds nothing.
    @inlinable public var isEmpty: Bool { index.isEmpty }

    /// The live value for `key`, marking it most recently used (a hit); `nil` if absent or expired
    /// (a miss; an expired value is removed and counts an expiration).
    @inlinable
    public mutating func value(forKey key: Key, now: Instant) -> Value? {
        guard let slot = index[key] else {
            statistics.misses += 1
            return nil
        }
        if nodes[slot].expiresAt <= now {
            statistics.misses += 1
            statistics.expirations += 1
            index.removeValue(forKey: key)
            unlink(slot)
            release(slot)
            return nil
        }
        statistics.hits += 1
        moveToFront(slot)
        return nodes[slot].value
    }

    /// Whether `key` holds a live value at `now`, without touching recency or statistics.
    @inlinable
    public func contains(_ key: Key, now: Instant) -> Bool {
        guard let slot = index[key] else { return false }
        return now < nodes[slot].expiresAt
    }

    /// Stores `value` for `key` until `expiresAt`, as most recently used. Replaces an existing
    /// value in place; otherwise, when full, first evicts the least recently used value.
    @inlinable
    public mutating func set(_ value: Value, forKey key: Key, expiresAt: Instant) {
        if let slot = index[key] {
            nodes[slot].value = value
            nodes[slot].expiresAt = expiresAt
            moveToFront(slot)
            return
        }
        if index.count >= capacity {
            let victim = tail
            if let victimKey = nodes[victim].key { index.removeValue(forKey: victimKey) }
            unlink(victim)
            release(victim)
            statistics.evictions += 1
        }
        let slot: Int
        if free >= 0 {
            slot = free
            free = nodes[slot].next
            nodes[slot] = Node(key: key, value: value, expiresAt: expiresAt, previous: -1, next: head)
        } else {
            slot = nodes.count
            nodes.append(Node(key: key, value: value, expiresAt: expiresAt, previous: -1, next: head))
        }
        if head >= 0 { nodes[head].previous = slot } else { tail = slot }
        head = slot
        index[key] = slot
    }

    /// Removes and returns the value for `key` (expired or not), or `nil`.
    @inlinable
    @discardableResult
    public mutating func removeValue(forKey key: Key) -> Value? {
        guard let slot = index.removeValue(forKey: key) else { return nil }
        let value = nodes[slot].value
        unlink(slot)
        release(slot)
        return value
    }

    /// Removes every value for which `shouldRemove` is true (not counted as evictions).
    @inlinable
    public mutating func removeAll(where shouldRemove: (Key, Value) throws -> Bool) rethrows {
        var slot = head
        while slot >= 0 {
            let next = nodes[slot].next
            if let key = nodes[slot].key, let value = nodes[slot].value, try shouldRemove(key, value) {
                index.removeValue(forKey: key)
                unlink(slot)
                release(slot)
            }
            slot = next
        }
    }

    /// Removes every value expired at `now`, counting expirations; returns how many.
    @discardableResult
    public mutating func removeExpired(now: Instant) -> Int {
        var removed = 0
        var slot = head
        while slot >= 0 {
            let next = nodes[slot].next
            if nodes[slot].expiresAt <= now, let key = nodes[slot].key {
                index.removeValue(forKey: key)
                unlink(slot)
                release(slot)
                removed += 1
            }
            slot = next
        }
        statistics.expirations += removed
        return removed
    }

    /// Removes every value (keeps statistics and the node storage).
    public mutating func removeAll() {
        var slot = head
        while slot >= 0 {
            let next = nodes[slot].next
            release(slot)
            slot = next
        }
        index.removeAll(keepingCapacity: true)
        head = -1
        tail = -1
    }

    /// Zeroes the statistics.
    public mutating func resetStatistics() {
        statistics = CacheStatistics()
    }

    /// Keys from most to least recently used (O(count); for tests and diagnostics).
    public var keysByRecency: [Key] {
        var keys: [Key] = []
        keys.reserveCapacity(index.count)
        var slot = head
        while slot >= 0 {
            if let key = nodes[slot].key { keys.append(key) }
            slot = nodes[slot].next
        }
        return keys
    }

    // MARK: List plumbing

    @inlinable
    mutating func unlink(_ slot: Int) {
        let previous = nodes[slot].previous
        let next = nodes[slot].next
        if previous >= 0 { nodes[previous].next = next } else { head = next }
        if next >= 0 { nodes[next].previous = previous } else { tail = previous }
        nodes[slot].previous = -1
        nodes[slot].next = -1
    }

    @inlinable
    mutating func moveToFront(_ slot: Int) {
        guard slot != head else { return }
        unlink(slot)
        nodes[slot].next = head
        if head >= 0 { nodes[head].previous = slot } else { tail = slot }
        head = slot
    }

    /// Puts an unlinked node on the free list, dropping its key and value.
    @inlinable
    mutating func release(_ slot: Int) {
        nodes[slot].key = nil
        nodes[slot].value = nil
        nodes[slot].next = free
        free = slot
    }
}
