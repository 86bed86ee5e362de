import Synchronization

/// Group commit: concurrent submissions are written together in one transaction.
///
/// Each ``submit(_:)`` queues its input. When the connection's thread gets to the batcher, it takes
/// every input waiting (at most `maxBatchSize`), runs `process` on them inside one
/// `BEGIN IMMEDIATE` … `COMMIT` — one fsync for the whole batch — and only after `COMMIT` returned
/// resumes every submitter with its output. While a batch commits, new submissions gather for the
/// next one. If `process` or the commit fails, the batch is rolled back and every submitter in it
/// gets the error.
public final class SQLiteBatcher<Input: Sendable, Output: Sendable>: Sendable {
    /// Writes a batch and returns one output per input, in input order. Runs on the connection's
    /// thread inside the batch's transaction.
    public typealias Process = @Sendable (SQLiteDatabaseHandle, [Input]) throws -> [Output]

    private struct Pending: Sendable {
        var input: Input
        var continuation: CheckedContinuation<Output, any Error>
    }

    private struct State: Sendable {
        var pending: [Pending] = []
        /// A drain job is queued on (or about to be queued on) the connection.
        var drainScheduled = false
        var committedBatches = 0
        var committedItems = 0
    }

    private let connection: SQLiteConnection
    private let maxBatchSize: Int
    private let process: Process
    private let state = Mutex(State())

    /// Creates a batcher writing through `connection`.
    ///
    /// - Parameters:
    ///   - maxBatchSize: The most inputs committed in one transaction (at least 1).
    ///   - process: Writes one batch; see ``Process``.
    public init(connection: SQLiteConnection, maxBatchSize: Int = 512, process: @escaping Process) {
        self.connection = connection
        self.maxBatchSize = max(1, maxBatchSize)
        self.process = process
    }

    /// Queues `input`, waits until the batch containing it has committed, and returns its output.
    /// Fails with ``SQLiteError/closed`` if the connection closes first.
    public func submit(_ input: Input) async throws -> Output {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Output, any Error>) in
            let mustSchedule = state.withLock { state in
                state.pending.append(Pending(input: input, continuation: continuation))
                if state.drainScheduled { return false }
                state.drainScheduled = true
                return true
            }
            if mustSchedule { scheduleDrain() }
        }
    }

    /// How many batches have committed (one transaction, one fsync each).
    public var committedBatchCount: Int { state.withLock { $0.committedBatches } }
    /// How many inputs have committed, over all batches.
    public var committedItemCount: Int { state.withLock { $0.committedItems } }
    /// How many submissions wait for a batch.
    public var pendingCount: Int { state.withLock { $0.pending.count } }

    private func scheduleDrain() {
        let queued = connection.enqueue { [self] handle in drain(handle) }
        if !queued { failAll(SQLiteError.closed) }
    }

    private func failAll(_ error: any Error) {
        let pending = state.withLock { state in
            let pending = state.pending
            state.pending.removeAll()
            state.drainScheduled = false
            return pending
        }
        for item in pending { item.continuation.resume(throwing: error) }
    }

    /// Runs on the connection's thread.
    private func drain(_ handle: SQLiteDatabaseHandle) {
        let (batch, more) = state.withLock { state in
            let count = min(maxBatchSize, state.pending.count)
            let batch = Array(state.pending.prefix(count))
            state.pending.removeFirst(count)
            if state.pending.isEmpty { state.drainScheduled = false }
            return (batch, !state.pending.isEmpty)
        }
        if !batch.isEmpty {
            let inputs = batch.map(\.input)
            let result = Result { try handle.transaction { try process($0, inputs) } }
            switch result {
            case .success(let outputs) where outputs.count == batch.count:
                state.withLock { state in
                    state.committedBatches += 1
                    state.committedItems += batch.count
                }
                for (item, output) in zip(batch, outputs) { item.continuation.resume(returning: output) }
            case .success(let outputs):
                let error = SQLiteError.misuse(
                    "batch process returned \(outputs.count) outputs for \(batch.count) inputs")
                for item in batch { item.continuation.resume(throwing: error) }
            case .failure(let error):
                for item in batch { item.continuation.resume(throwing: error) }
            }
        }
        // Queue the rest behind whatever else was submitted meanwhile, rather than looping here.
        if more { scheduleDrain() }
    }
}
