#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A mutex plus condition variable whose timed waits run on the monotonic
/// clock, so a wall-clock step (NTP, an operator's `date -s`) can neither
/// stretch nor cut short a deadline wait (`NSCondition.wait(until:)` is
/// wall-clock based).
///
/// `@unchecked Sendable`: the pthread objects are designed for concurrent use
/// and are only reached through their own functions.
public final class MonotonicCondition: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>

    /// Creates an unlocked mutex and its condition variable.
    public init() {
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        #if os(Linux)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attributes)
        pthread_condattr_destroy(&attributes)
        #else
        pthread_cond_init(cond, nil)
        #endif
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    /// Acquires the mutex.
    public func lock() { pthread_mutex_lock(mutex) }

    /// Releases the mutex.
    public func unlock() { pthread_mutex_unlock(mutex) }

    /// Runs `body` with the mutex held.
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }

    /// Waits (mutex held) until signalled; wakeups may be spurious.
    public func wait() { pthread_cond_wait(cond, mutex) }

    /// Waits (mutex held) until signalled or `timeout` has passed on the
    /// monotonic clock; wakeups may be spurious, so re-check the predicate.
    public func wait(timeout: Duration) {
        guard timeout > .zero else { return }
        let (seconds, attoseconds) = timeout.components
        let nanoseconds = attoseconds / 1_000_000_000
        #if os(Linux)
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        var total = Int64(now.tv_nsec) + nanoseconds
        var sec = Int64(now.tv_sec) + seconds + total / 1_000_000_000
        total %= 1_000_000_000
        if sec < 0 { sec = 0 }
        var deadline = timespec(tv_sec: numericCast(sec), tv_nsec: numericCast(total))
        pthread_cond_timedwait(cond, mutex, &deadline)
        #else
        var relative = timespec(tv_sec: numericCast(seconds), tv_nsec: numericCast(nanoseconds))
        pthread_cond_timedwait_relative_np(cond, mutex, &relative)
        #endif
    }

    /// Wakes one waiter.
    public func signal() { pthread_cond_signal(cond) }

    /// Wakes every waiter.
    public func broadcast() { pthread_cond_broadcast(cond) }
}

/// Starts a dedicated OS thread (never Swift's cooperative pool) for blocking
/// calls. SIGPIPE is blocked on it, so a peer closing the socket makes a write
/// fail with EPIPE instead of killing the process.
public func startDedicatedThread(name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        body()
    }
    thread.name = name
    thread.start()
}
