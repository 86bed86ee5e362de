import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A dedicated OS thread that runs one connection's blocking C calls, one job
/// at a time, in submission order. Async callers suspend on a checked
/// continuation; no blocking socket call ever runs on Swift's cooperative pool.
///
/// `@unchecked Sendable`: the only mutable state (`jobs`, `accepting`) is read
/// and written exclusively while holding `condition`.
public final class BlockingExecutor: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var accepting = true

    public init(name: String) {
        // The thread holds the executor strongly until `shutdown()` lets the
        // loop drain and return.
        let thread = Thread { [self] in
            Self.blockSIGPIPEOnThisThread()
            self.loop()
        }
        thread.name = name
        thread.start()
    }

    /// A peer that closes the socket must not kill the process: a write then
    /// fails with EPIPE instead. Blocked on this thread only, not process-wide.
    private static func blockSIGPIPEOnThisThread() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty && accepting {
                condition.wait()
            }
            if jobs.isEmpty { // shut down and drained
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }

    /// Enqueues `job`; returns false (and drops it) after `shutdown()`.
    @discardableResult
    public func submit(_ job: @escaping @Sendable () -> Void) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard accepting else { return false }
        jobs.append(job)
        condition.signal()
        return true
    }

    /// Already-queued jobs still run; then the thread exits.
    public func shutdown() {
        condition.lock()
        accepting = false
        condition.signal()
        condition.unlock()
    }

    /// Runs `body` on the executor's thread and returns its result.
    public func run<T: Sendable, E: Error>(
        ifShutDown: @escaping @Sendable () -> E,
        _ body: @escaping @Sendable () throws(E) -> T
    ) async throws(E) -> T {
        let result: Result<T, E> = await withCheckedContinuation { continuation in
            let queued = submit {
                do throws(E) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
            if !queued {
                continuation.resume(returning: .failure(ifShutDown()))
            }
        }
        return try result.get()
    }
}
