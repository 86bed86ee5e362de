/// The sliding window of a closed (or metrics-only) breaker: running totals over either the last
/// `size` calls (a ring of one-byte flags) or the last `size` seconds (a ring of one-second buckets).
///
/// Storage is allocated once, at init; recording never allocates. A time window evicts lazily: moving
/// from second `a` to second `b` clears the buckets of seconds `a+1…b` (O(b−a), at most `size`, so O(1)
/// amortised per elapsed second), and a gap of `size` seconds or more clears everything.
@usableFromInline
internal struct BreakerOutcomeWindow: Sendable {
    /// The counts of one second.
    @usableFromInline
    internal struct Bucket: Sendable {
        @usableFromInline var calls: UInt32
        @usableFromInline var failed: UInt32
        @usableFromInline var slow: UInt32

        @inlinable init() {
            calls = 0
            failed = 0
            slow = 0
        }
    }

    @usableFromInline static let failedFlag: UInt8 = 1
    @usableFromInline static let slowFlag: UInt8 = 2

    @usableFromInline let isTimeBased: Bool
    /// Calls (count) or seconds (time); at least 1.
    @usableFromInline let size: Int
    /// Count window: one flag byte per slot (bit 0 failed, bit 1 slow); empty for a time window.
    @usableFromInline var flags: ContiguousArray<UInt8>
    /// Time window: one bucket per second, slot `second mod size`; empty for a count window.
    @usableFromInline var buckets: ContiguousArray<Bucket>
    /// Count window: the slot the next outcome overwrites.
    @usableFromInline var head: Int
    /// Time window: the latest second the buckets are current for.
    @usableFromInline var latestSecond: Int64
    /// Running totals over the window (as of `latestSecond` for a time window).
    @usableFromInline var calls: Int
    @usableFromInline var failed: Int
    @usableFromInline var slow: Int

    init(_ window: BreakerConfig.Window, now: Instant) {
        let size = max(1, window.size)
        self.size = size
        isTimeBased = window.type == .time
        flags = isTimeBased ? [] : ContiguousArray(repeating: 0, count: size)
        buckets = isTimeBased ? ContiguousArray(repeating: Bucket(), count: size) : []
        head = 0
        latestSecond = Self.second(of: now)
        calls = 0
        failed = 0
        slow = 0
    }

    /// The whole second `instant` falls in (floor division, so negative instants work too).
    @inlinable
    static func second(of instant: Instant) -> Int64 {
        let ns = instant.nanoseconds
        let q = ns / 1_000_000_000
        return (ns % 1_000_000_000 < 0) ? q - 1 : q
    }

    @inlinable
    func slot(ofSecond second: Int64) -> Int {
        let r = Int(second % Int64(size))
        return r < 0 ? r + size : r
    }

    /// Empties the window, keeping its storage.
    mutating func reset(now: Instant) {
        for i in flags.indices { flags[i] = 0 }
        for i in buckets.indices { buckets[i] = Bucket() }
        head = 0
        latestSecond = Self.second(of: now)
        calls = 0
        failed = 0
        slow = 0
    }

    /// Adds one outcome.
    @inlinable
    mutating func record(failed isFailed: Bool, slow isSlow: Bool, now: Instant) {
        if isTimeBased {
            recordTimed(failed: isFailed, slow: isSlow, now: now)
            return
        }
        let new: UInt8 = (isFailed ? Self.failedFlag : 0) | (isSlow ? Self.slowFlag : 0)
        let old = flags[head]
        failed += Int(new & Self.failedFlag) &- Int(old & Self.failedFlag)
        slow += Int(new >> 1) &- Int(old >> 1)
        flags[head] = new
        head &+= 1
        if head == size { head = 0 }
        if calls < size { calls &+= 1 }
    }

    @usableFromInline
    mutating func recordTimed(failed isFailed: Bool, slow isSlow: Bool, now: Instant) {
        advance(to: Self.second(of: now))
        // An instant earlier than the latest second (a clock that stepped back) lands in the latest bucket.
        let index = slot(ofSecond: latestSecond)
        buckets[index].calls &+= 1
        calls &+= 1
        if isFailed {
            buckets[index].failed &+= 1
            failed &+= 1
        }
        if isSlow {
            buckets[index].slow &+= 1
            slow &+= 1
        }
    }

    /// Makes the buckets current for `second`, evicting the seconds that left the window.
    @usableFromInline
    mutating func advance(to second: Int64) {
        guard second > latestSecond else { return }
        if second &- latestSecond >= Int64(size) {
            if calls != 0 {
                for i in buckets.indices { buckets[i] = Bucket() }
                calls = 0
                failed = 0
                slow = 0
            }
        } else {
            var s = latestSecond &+ 1
            while s <= second {
                let index = slot(ofSecond: s)
                let bucket = buckets[index]
                if bucket.calls != 0 {
                    calls &-= Int(bucket.calls)
                    failed &-= Int(bucket.failed)
                    slow &-= Int(bucket.slow)
                    buckets[index] = Bucket()
                }
                s &+= 1
            }
        }
        latestSecond = second
    }

    /// The totals as they would be at `now`, without evicting anything.
    func totals(at now: Instant) -> (calls: Int, failed: Int, slow: Int) {
        guard isTimeBased else { return (calls, failed, slow) }
        let second = Self.second(of: now)
        guard second > latestSecond else { return (calls, failed, slow) }
        if second &- latestSecond >= Int64(size) { return (0, 0, 0) }
        var result = (calls: calls, failed: failed, slow: slow)
        var s = latestSecond &+ 1
        while s <= second {
            let bucket = buckets[slot(ofSecond: s)]
            result.calls -= Int(bucket.calls)
            result.failed -= Int(bucket.failed)
            result.slow -= Int(bucket.slow)
            s &+= 1
        }
        return result
    }
}
