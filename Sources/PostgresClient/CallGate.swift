import Synchronization

/// How one call on a connection ended. (A plain enum rather than `Result`.)
enum CallOutcome<T: Sendable>: Sendable {
    case success(T)
    case failure(PostgresError)

    func get() throws(PostgresError) -> T {
        switch self {
        case .success(let value): return value
        case .failure(let error): throw error
        }
    }
}

/// Resolves one suspended call exactly once: by the connection thread with
/// the result, by the deadline timer with `.timeout`, or by task
/// cancellation — whichever comes first. The others then do nothing.
final class CallGate<T: Sendable>: Sendable {
    enum Phase: Sendable, Equatable {
        /// Waiting in the connection's job queue.
        case queued
        /// The connection thread is running the call.
        case running
        case done
    }

    private struct State {
        var phase = Phase.queued
        var continuation: CheckedContinuation<CallOutcome<T>, Never>?
        var early: CallOutcome<T>? // resolved before the continuation was installed
        var ticket: DeadlineTicket?
    }

    private let state = Mutex(State())

    init() {}

    /// Installs the continuation (resuming it at once if already resolved).
    func install(_ continuation: CheckedContinuation<CallOutcome<T>, Never>) {
        let early: CallOutcome<T>? = state.withLock { state in
            if let early = state.early { return early }
            state.continuation = continuation
            return nil
        }
        if let early { continuation.resume(returning: early) }
    }

    /// Keeps the deadline ticket so it can be settled on completion.
    func setTicket(_ ticket: DeadlineTicket) {
        let done = state.withLock { state in
            if state.phase == .done { return true }
            state.ticket = ticket
            return false
        }
        if done { ticket.settle() }
    }

    /// Called by the connection thread before running the call; false when
    /// the call was already resolved (timed out or cancelled while queued).
    func start() -> Bool {
        state.withLock { state in
            guard state.phase == .queued else { return false }
            state.phase = .running
            return true
        }
    }

    /// Resolves the call; returns the phase it was in, or nil if it was
    /// already resolved (then `outcome` is dropped). When this call wins,
    /// `beforeResuming` runs with that phase before the caller is resumed
    /// (so what it changes is visible to the caller).
    @discardableResult
    func resolve(_ outcome: CallOutcome<T>, beforeResuming: ((Phase) -> Void)? = nil) -> Phase? {
        let taken: Taken? = state.withLock { state in
            guard state.phase != .done else { return nil }
            let taken = Taken(previous: state.phase, continuation: state.continuation, ticket: state.ticket)
            state.phase = .done
            state.continuation = nil
            state.ticket = nil
            if taken.continuation == nil { state.early = outcome }
            return taken
        }
        guard let taken else { return nil }
        taken.ticket?.settle()
        beforeResuming?(taken.previous)
        taken.continuation?.resume(returning: outcome)
        return taken.previous
    }

    private struct Taken {
        let previous: Phase
        let continuation: CheckedContinuation<CallOutcome<T>, Never>?
        let ticket: DeadlineTicket?
    }
}
