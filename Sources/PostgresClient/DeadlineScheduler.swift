import ConnectionThreads
import Synchronization

/// One pending expiry: `fire()` runs the action once, unless `settle()` ran
/// first (the call finished in time). Either drops the action, so a settled
/// ticket holds no references.
final class DeadlineTicket: Sendable {
    private let action: Mutex<(@Sendable () -> Void)?>

    init(_ action: @escaping @Sendable () -> Void) {
        self.action = Mutex(action)
    }

    /// The call completed: never fire.
    func settle() {
        action.withLock { $0 = nil }
    }

    var isSettled: Bool { action.withLock { $0 == nil } }

    /// Runs the action if not settled.
    func fire() {
        let taken = action.withLock { action in
            let taken = action
            action = nil
            return taken
        }
        taken?()
    }
}

/// One dedicated thread, shared by the whole package, that fires deadline
/// tickets on time — independently of Swift's cooperative pool (which may be
/// saturated) and of connection threads (which may be stuck in libpq).
///
/// A min-heap of deadlines. Settled tickets are dropped when they come due,
/// or earlier by a compaction when they make up most of a large heap.
///
/// `@unchecked Sendable`: `heap`, `started` and `insertsSinceCompaction` are
/// only touched with `condition` locked.
final class DeadlineScheduler: @unchecked Sendable {
    static let shared = DeadlineScheduler()

    private struct Entry {
        let deadline: ContinuousClock.Instant
        let ticket: DeadlineTicket
    }

    private let condition = MonotonicCondition()
    private var heap: [Entry] = []
    private var started = false
    private var insertsSinceCompaction = 0

    /// Fires `ticket` at `deadline` unless it is settled by then.
    func schedule(_ ticket: DeadlineTicket, at deadline: ContinuousClock.Instant) {
        condition.lock()
        defer { condition.unlock() }
        if !started {
            started = true
            startDedicatedThread(name: "postgres-deadlines") { [self] in loop() }
        }
        heap.append(Entry(deadline: deadline, ticket: ticket))
        let position = siftUp(heap.count - 1)
        insertsSinceCompaction += 1
        if heap.count >= 4096 && insertsSinceCompaction >= heap.count / 2 { compact() }
        if position == 0 { condition.signal() } // a new earliest deadline
    }

    private func loop() {
        var due: [DeadlineTicket] = []
        condition.lock()
        while true {
            guard let first = heap.first else {
                condition.wait()
                continue
            }
            let now = ContinuousClock.now
            if first.deadline > now {
                condition.wait(timeout: first.deadline - now)
                continue
            }
            while let head = heap.first, head.deadline <= now {
                due.append(popMin().ticket)
            }
            condition.unlock()
            for ticket in due { ticket.fire() }
            due.removeAll(keepingCapacity: true)
            condition.lock()
        }
    }

    // MARK: heap (with `condition` locked)

    private func compact() {
        heap.removeAll { $0.ticket.isSettled }
        insertsSinceCompaction = 0
        var index = heap.count / 2
        while index > 0 {
            index -= 1
            siftDown(index)
        }
    }

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

    private func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count && heap[left].deadline < heap[smallest].deadline { smallest = left }
            if right < heap.count && heap[right].deadline < heap[smallest].deadline { smallest = right }
            if smallest == parent { return }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
    }

    private func popMin() -> Entry {
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            siftDown(0)
        }
        return top
    }
}
