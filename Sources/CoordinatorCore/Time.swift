/// A point on a clock, in nanoseconds since that clock's origin.
///
/// The cores never read a clock themselves: every operation takes the current `Instant` from its
/// caller. In production the node passes a monotonic reading for durations (breaker windows, limiter
/// timers) and wall-clock readings where a time must survive a restart (token expiry); tests pass
/// whatever they like, so every timing rule is checked deterministically.
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// Nanoseconds since the clock's origin.
    public var nanoseconds: Int64

    /// Creates an instant `nanoseconds` after the clock's origin.
    @inlinable public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    /// Creates an instant `milliseconds` after the clock's origin.
    @inlinable public static func milliseconds(_ milliseconds: Int64) -> Instant {
        Instant(nanoseconds: milliseconds &* 1_000_000)
    }

    /// The clock's origin.
    public static let zero = Instant(nanoseconds: 0)

    /// Milliseconds since the clock's origin, rounded down.
    @inlinable public var milliseconds: Int64 { nanoseconds / 1_000_000 }

    @inlinable public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    /// The instant `span` later.
    @inlinable public static func + (lhs: Instant, rhs: Span) -> Instant {
        Instant(nanoseconds: lhs.nanoseconds &+ rhs.nanoseconds)
    }

    /// The instant `span` earlier.
    @inlinable public static func - (lhs: Instant, rhs: Span) -> Instant {
        Instant(nanoseconds: lhs.nanoseconds &- rhs.nanoseconds)
    }

    /// The span from `rhs` to `lhs` (negative when `lhs` is earlier).
    @inlinable public static func - (lhs: Instant, rhs: Instant) -> Span {
        Span(nanoseconds: lhs.nanoseconds &- rhs.nanoseconds)
    }

    public var description: String { "t+\(nanoseconds)ns" }
}

/// A length of time in nanoseconds. A plain `Int64` wrapper: cheaper on hot paths than
/// `Swift.Duration`, whose arithmetic is 128-bit.
public struct Span: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// The length in nanoseconds.
    public var nanoseconds: Int64

    /// Creates a span of `nanoseconds`.
    @inlinable public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    /// A span of `value` milliseconds.
    @inlinable public static func milliseconds(_ value: Int64) -> Span { Span(nanoseconds: value &* 1_000_000) }
    /// A span of `value` seconds.
    @inlinable public static func seconds(_ value: Int64) -> Span { Span(nanoseconds: value &* 1_000_000_000) }

    /// No time at all.
    public static let zero = Span(nanoseconds: 0)

    /// Whole milliseconds, rounded up, so a caller told to wait this long never comes back early.
    @inlinable public var millisecondsRoundedUp: Int64 {
        nanoseconds <= 0 ? 0 : (nanoseconds + 999_999) / 1_000_000
    }

    @inlinable public static func < (lhs: Span, rhs: Span) -> Bool { lhs.nanoseconds < rhs.nanoseconds }
    @inlinable public static func + (lhs: Span, rhs: Span) -> Span { Span(nanoseconds: lhs.nanoseconds &+ rhs.nanoseconds) }
    @inlinable public static func - (lhs: Span, rhs: Span) -> Span { Span(nanoseconds: lhs.nanoseconds &- rhs.nanoseconds) }

    public var description: String { "\(nanoseconds)ns" }
}
