import CoordinatorCore
import Testing

@Suite("LRU cache with TTL")
struct LRUCacheTests {
    static let forever = Instant(nanoseconds: .max)

    @Test func hitsAndMisses() {
        var cache = LRUCache<String, Int>(capacity: 3)
        #expect(cache.isEmpty)
        #expect(cache.value(forKey: "a", now: atMs(0)) == nil)
        cache.set(1, forKey: "a", expiresAt: Self.forever)
        #expect(cache.value(forKey: "a", now: atMs(0)) == 1)
        #expect(cache.value(forKey: "a", now: atMs(0)) == 1)
        #expect(cache.count == 1)
        #expect(cache.stats == CacheStatistics(hits: 2, misses: 1, evictions: 0, expirations: 0))
        cache.resetStatistics()
        #expect(cache.stats == CacheStatistics())
    }

    @Test func evictsTheLeastRecentlyUsed() {
        var cache = LRUCache<String, Int>(capacity: 3)
        cache.set(1, forKey: "a", expiresAt: Self.forever)
        cache.set(2, forKey: "b", expiresAt: Self.forever)
        cache.set(3, forKey: "c", expiresAt: Self.forever)
        #expect(cache.keysByRecency == ["c", "b", "a"])
        #expect(cache.value(forKey: "a", now: atMs(0)) == 1)  // a becomes most recent
        #expect(cache.keysByRecency == ["a", "c", "b"])
        cache.set(4, forKey: "d", expiresAt: Self.forever)  // evicts b
        #expect(cache.keysByRecency == ["d", "a", "c"])
        #expect(cache.value(forKey: "b", now: atMs(0)) == nil)
        cache.set(5, forKey: "e", expiresAt: Self.forever)  // evicts c
        cache.set(6, forKey: "f", expiresAt: Self.forever)  // evicts a
        #expect(cache.keysByRecency == ["f", "e", "d"])
        #expect(cache.count == 3)
        #expect(cache.stats.evictions == 3)
        // `contains` neither reorders nor counts.
        #expect(cache.contains("d", now: atMs(0)))
        #expect(!cache.contains("a", now: atMs(0)))
        #expect(cache.keysByRecency == ["f", "e", "d"])
        #expect(cache.stats == CacheStatistics(hits: 1, misses: 1, evictions: 3, expirations: 0))
    }

    @Test func updateInPlaceMovesToFrontWithoutEvicting() {
        var cache = LRUCache<String, Int>(capacity: 3)
        cache.set(1, forKey: "a", expiresAt: Self.forever)
        cache.set(2, forKey: "b", expiresAt: Self.forever)
        cache.set(3, forKey: "c", expiresAt: Self.forever)
        cache.set(10, forKey: "a", expiresAt: atMs(50))
        #expect(cache.count == 3)
        #expect(cache.stats.evictions == 0)
        #expect(cache.keysByRecency == ["a", "c", "b"])
        cache.set(4, forKey: "d", expiresAt: Self.forever)  // evicts b, not a
        #expect(cache.keysByRecency == ["d", "a", "c"])
        #expect(cache.value(forKey: "a", now: atMs(49)) == 10)
        // The update replaced the expiry too.
        #expect(cache.value(forKey: "a", now: atMs(50)) == nil)
    }

    @Test func expiry() {
        var cache = LRUCache<Int, String>(capacity: 4)
        cache.set("x", forKey: 1, expiresAt: atMs(100))
        cache.set("y", forKey: 2, expiresAt: atMs(200))
        #expect(cache.value(forKey: 1, now: atMs(99)) == "x")
        #expect(cache.contains(1, now: atMs(99)))
        #expect(!cache.contains(1, now: atMs(100)))
        #expect(cache.count == 2)
        #expect(cache.value(forKey: 1, now: atMs(100)) == nil)  // live while now < expiresAt
        #expect(cache.count == 1)
        #expect(cache.value(forKey: 1, now: atMs(100)) == nil)  // gone: a plain miss
        #expect(cache.stats == CacheStatistics(hits: 1, misses: 2, evictions: 0, expirations: 1))
        // Re-setting an expired key revives it.
        cache.set("z", forKey: 2, expiresAt: atMs(300))
        #expect(cache.value(forKey: 2, now: atMs(250)) == "z")
    }

    @Test func removeExpired() {
        var cache = LRUCache<Int, Int>(capacity: 10)
        for key in 0..<10 { cache.set(key, forKey: key, expiresAt: atMs(Int64(key) * 10)) }
        #expect(cache.removeExpired(now: atMs(45)) == 5)  // 0...4
        #expect(cache.count == 5)
        #expect(cache.keysByRecency == [9, 8, 7, 6, 5])
        #expect(cache.stats.expirations == 5)
        #expect(cache.removeExpired(now: atMs(45)) == 0)
    }

    @Test func removeValue() {
        var cache = LRUCache<String, Int>(capacity: 3)
        cache.set(1, forKey: "a", expiresAt: Self.forever)
        cache.set(2, forKey: "b", expiresAt: atMs(1))
        cache.set(3, forKey: "c", expiresAt: Self.forever)
        #expect(cache.removeValue(forKey: "b") == 2)  // expired or not
        #expect(cache.removeValue(forKey: "b") == nil)
        #expect(cache.keysByRecency == ["c", "a"])
        cache.set(4, forKey: "d", expiresAt: Self.forever)
        #expect(cache.stats.evictions == 0)
        #expect(cache.keysByRecency == ["d", "c", "a"])
        #expect(cache.removeValue(forKey: "a") == 1)  // the tail
        #expect(cache.removeValue(forKey: "d") == 4)  // the head
        #expect(cache.keysByRecency == ["c"])
        #expect(cache.removeValue(forKey: "c") == 3)
        #expect(cache.keysByRecency.isEmpty && cache.isEmpty)
        cache.set(5, forKey: "e", expiresAt: Self.forever)
        #expect(cache.keysByRecency == ["e"])
    }

    @Test func removeAllWhere() {
        var cache = LRUCache<Int, String>(capacity: 8)
        for key in 0..<8 { cache.set("v\(key)", forKey: key, expiresAt: Self.forever) }
        cache.removeAll { key, _ in key % 2 == 0 }
        #expect(cache.keysByRecency == [7, 5, 3, 1])
        cache.removeAll { _, value in value == "v7" || value == "v1" }
        #expect(cache.keysByRecency == [5, 3])
        #expect(cache.stats.evictions == 0 && cache.stats.expirations == 0)
        cache.removeAll { _, _ in false }
        #expect(cache.count == 2)
        cache.removeAll()
        #expect(cache.isEmpty && cache.keysByRecency.isEmpty)
        for key in 10..<18 { cache.set("w", forKey: key, expiresAt: Self.forever) }
        #expect(cache.count == 8 && cache.stats.evictions == 0)
        cache.set("w", forKey: 18, expiresAt: Self.forever)
        #expect(cache.stats.evictions == 1)
        #expect(cache.value(forKey: 10, now: atMs(0)) == nil)
    }

    @Test func capacityOne() {
        var cache = LRUCache<String, Int>(capacity: 1)
        cache.set(1, forKey: "a", expiresAt: Self.forever)
        cache.set(2, forKey: "a", expiresAt: Self.forever)  // update: no eviction
        #expect(cache.stats.evictions == 0)
        #expect(cache.value(forKey: "a", now: atMs(0)) == 2)
        cache.set(3, forKey: "b", expiresAt: Self.forever)
        #expect(cache.stats.evictions == 1)
        #expect(cache.value(forKey: "a", now: atMs(0)) == nil)
        #expect(cache.value(forKey: "b", now: atMs(0)) == 3)
        #expect(cache.keysByRecency == ["b"])
        #expect(cache.removeValue(forKey: "b") == 3)
        cache.set(4, forKey: "c", expiresAt: atMs(5))
        #expect(cache.value(forKey: "c", now: atMs(5)) == nil)
        #expect(cache.isEmpty)
        cache.set(5, forKey: "d", expiresAt: Self.forever)
        #expect(cache.value(forKey: "d", now: atMs(5)) == 5)
        #expect(cache.stats == CacheStatistics(hits: 3, misses: 2, evictions: 1, expirations: 1))
    }

    @Test func valueSemantics() {
        var original = LRUCache<Int, Int>(capacity: 2)
        original.set(1, forKey: 1, expiresAt: Self.forever)
        var copy = original
        copy.set(2, forKey: 2, expiresAt: Self.forever)
        copy.set(3, forKey: 3, expiresAt: Self.forever)
        #expect(original.keysByRecency == [1])
        #expect(copy.keysByRecency == [3, 2])
    }

    @Test(arguments: [(1, UInt64(1)), (2, 2), (5, 3), (16, 4)])
    func matchesAReferenceModel(capacity: Int, seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var cache = LRUCache<Int, Int>(capacity: capacity)
        var model = ReferenceLRU(capacity: capacity)
        var now: Int64 = 0
        for step in 0..<20_000 {
            now += Int64.random(in: 0...3, using: &random)
            let key = Int.random(in: 0..<(capacity * 2 + 3), using: &random)
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<45:
                #expect(cache.value(forKey: key, now: atMs(now)) == model.value(forKey: key, now: now), "step \(step)")
            case 45..<85:
                let expiresAt = now + Int64.random(in: 0...40, using: &random)
                cache.set(step, forKey: key, expiresAt: atMs(expiresAt))
                model.set(step, forKey: key, expiresAt: expiresAt)
            case 85..<95:
                #expect(cache.removeValue(forKey: key) == model.removeValue(forKey: key), "step \(step)")
            case 95..<98:
                let modulus = Int.random(in: 2...4, using: &random)
                cache.removeAll { key, _ in key % modulus == 0 }
                model.removeAll { $0.key % modulus == 0 }
            default:
                #expect(cache.removeExpired(now: atMs(now)) == model.removeExpired(now: now), "step \(step)")
            }
            #expect(cache.count == model.entries.count)
            #expect(cache.keysByRecency == model.entries.map(\.key), "step \(step)")
            #expect(cache.stats == model.stats, "step \(step)")
        }
    }
}

/// The obvious O(n) LRU: an array from most to least recently used.
struct ReferenceLRU {
    struct Entry {
        var key: Int
        var value: Int
        var expiresAt: Int64
    }

    let capacity: Int
    var entries: [Entry] = []
    var stats = CacheStatistics()

    init(capacity: Int) { self.capacity = capacity }

    mutating func value(forKey key: Int, now: Int64) -> Int? {
        guard let index = entries.firstIndex(where: { $0.key == key }) else {
            stats.misses += 1
            return nil
        }
        let entry = entries.remove(at: index)
        if entry.expiresAt <= now {
            stats.misses += 1
            stats.expirations += 1
            return nil
        }
        stats.hits += 1
        entries.insert(entry, at: 0)
        return entry.value
    }

    mutating func set(_ value: Int, forKey key: Int, expiresAt: Int64) {
        if let index = entries.firstIndex(where: { $0.key == key }) {
            entries.remove(at: index)
        } else if entries.count == capacity {
            entries.removeLast()
            stats.evictions += 1
        }
        entries.insert(Entry(key: key, value: value, expiresAt: expiresAt), at: 0)
    }

    mutating func removeValue(forKey key: Int) -> Int? {
        guard let index = entries.firstIndex(where: { $0.key == key }) else { return nil }
        return entries.remove(at: index).value
    }

    mutating func removeAll(where predicate: (Entry) -> Bool) {
        entries.removeAll(where: predicate)
    }

    mutating func removeExpired(now: Int64) -> Int {
        let before = entries.count
        entries.removeAll { $0.expiresAt <= now }
        stats.expirations += before - entries.count
        return before - entries.count
    }
}
