import ConnectionThreads

/// One dedicated thread that expires `PendingRequest`s at their deadline,
/// independently of the connection thread (which may be stuck in a read).
///
/// A min-heap of deadlines; completed requests are not removed (expiring
/// them is a no-op), they just fall out when their deadline passes. Expiries
/// due within `coalescing` of each other fire together, so a busy client
/// wakes this thread at most about every `coalescing`, at the price of
/// failing a caller up to that much before its deadline, never after.
///
/// `@unchecked Sendable`: `heap`, `running` and `onExpire` are guarded by `condition`.
final class DeadlineTimer: @unchecked Sendable {
    private struct Entry {
        let deadline: ContinuousClock.Instant
        let request: PendingRequest
    }

    private let name: String
    private let condition = MonotonicCondition()
    private var heap: [Entry] = []
    private var running = true
    private var onExpire: (@Sendable (PendingRequest) -> Void)?
    private let coalescing = Duration.microseconds(500)

    init(name: String) {
        self.name = name
    }

    /// Starts the thread; `onExpire` runs on it, outside the lock.
    func start(onExpire: @escaping @Sendable (PendingRequest) -> Void) {
        condition.withLock { self.onExpire = onExpire }
        startDedicatedThread(name: name) { [self] in loop() }
    }

    func schedule(_ request: PendingRequest) {
        condition.lock()
        defer { condition.unlock() }
        guard running else { return }
        heap.append(Entry(deadline: request.deadline, request: request))
        let index = siftUp(heap.count - 1)
        if index == 0 { condition.signal() } // a new earliest deadline
    }

    /// Stops the thread; pending expiries are dropped (the connection thread
    /// completes or fails every request it still holds).
    func shutdown() {
        condition.withLock {
            running = false
            heap = []
            onExpire = nil
            condition.signal()
        }
    }

    private func loop() {
        var due: [PendingRequest] = []
        condition.lock()
        while running {
            guard let first = heap.first else {
                condition.wait()
                continue
            }
            let now = ContinuousClock.now
            if first.deadline > now + coalescing {
                condition.wait(timeout: first.deadline - now)
                continue
            }
            while let head = heap.first, head.deadline <= now + coalescing {
                due.append(popMin().request)
            }
            let action = onExpire
            condition.unlock()
            if let action {
                for request in due where !request.isCompleted { action(request) }
            }
            due.removeAll(keepingCapacity: true)
            condition.lock()
        }
        condition.unlock()
    }

    // MARK: heap (guarded by `condition`)

    @discardableResult
    private func siftUp(_ start: Int) -> Int {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].deadline < heap[parent].deadline else { break }
            heap.swapAt(child, parent)
            child = parent
        }
        return child
    }

    private func popMin() -> Entry {
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var smallest = parent
                if left < heap.count && heap[left].deadline < heap[smallest].deadline { smallest = left }
                if right < heap.count && heap[right].deadline < heap[smallest].deadline { smallest = right }
                if smallest == parent { break }
                heap.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }
}
