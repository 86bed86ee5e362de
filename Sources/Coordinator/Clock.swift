#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CoordinatorCore

/// Where the node reads time. The cores never read a clock; the node passes them readings from here.
public protocol NodeClock: Sendable {
    /// A monotonic reading for durations: breaker windows, open waits, limiter timers.
    func monotonicNow() -> Instant
    /// Milliseconds since 1970 for times that must survive a restart (token expiry, audit times).
    func wallMilliseconds() -> Int64
}

/// The operating system's clocks (`CLOCK_MONOTONIC`, `CLOCK_REALTIME`).
public struct SystemClock: NodeClock {
    public init() {}

    @inlinable
    public func monotonicNow() -> Instant {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Instant(nanoseconds: Int64(spec.tv_sec) &* 1_000_000_000 &+ Int64(spec.tv_nsec))
    }

    @inlinable
    public func wallMilliseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) &* 1000 &+ Int64(spec.tv_nsec) / 1_000_000
    }
}
