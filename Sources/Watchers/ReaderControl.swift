import Glibc
import Synchronization
import SystemSupport

// Moved to SystemSupport (Actions needs them too); the names stay where callers found them.
public typealias ReaderThread = SystemSupport.ReaderThread
public typealias WakeupEvent = SystemSupport.WakeupEvent

/// Requests from other threads to a watcher's reader thread, with the eventfd that wakes it from
/// poll(2): stop; resynchronise (re-dump, once per request); hold and release (tests overflow a
/// socket by leaving it unread). Shared by the netlink watcher and the nftables monitor.
final class ReaderControl: Sendable {
    enum Request { case stop, resync, hold, release }

    struct Pending: Equatable {
        var stop = false
        var resync = false
        var held = false
    }

    /// Polled by the reader, first: requests go before a busy socket.
    let wakeup: WakeupEvent
    /// Signalled by the reader once it has stopped reading for a hold.
    private let heldAcknowledgement: WakeupEvent
    private let pending = Mutex(Pending())
    /// Times events were lost (or declared lost); the reader counts, tests read.
    let overflows = Atomic(0)
    /// The nftables monitor's messages from ignored ports that reached user space (tests).
    let ignoredMessages = Atomic(0)

    init() throws(SystemError) {
        wakeup = try WakeupEvent()
        heldAcknowledgement = try WakeupEvent()
    }

    func request(_ request: Request) {
        pending.withLock {
            switch request {
            case .stop: $0.stop = true
            case .resync: $0.resync = true
            case .hold: $0.held = true
            case .release: $0.held = false
            }
        }
        wakeup.signal()
    }

    /// The requests so far, for the reader; a resync is handed out once. A new hold is
    /// acknowledged here: the reader calls this and then leaves its socket unread.
    func take(after previous: Pending? = nil) -> Pending {
        wakeup.drain()
        let requests = pending.withLock { pending in
            defer { pending.resync = false }
            return pending
        }
        if requests.held, previous?.held != true { heldAcknowledgement.signal() }
        return requests
    }

    /// Makes the reader leave its socket unread until `release`, and returns once it has
    /// stopped reading. Blocks briefly: tests only.
    func hold() {
        request(.hold)
        heldAcknowledgement.waitAndDrain()
    }

    func countOverflow() { overflows.add(1, ordering: .relaxed) }

    /// What ended a reader's wait.
    enum Wake { case requests, readable, timedOut, closed, failed }

    /// The reader's wait: in poll(2) until a request arrives (then `requests` is brought up to
    /// date), `socket` has something to read, or `timeout` milliseconds pass (-1: no limit).
    /// While a hold is in force only requests are awaited. Never spins.
    func wait(for socket: Int32, requests: inout Pending, timeout: Int32 = -1) -> Wake {
        // The wake-up first: requests go before a busy socket.
        var descriptors = [
            pollfd(fd: wakeup.descriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: socket, events: Int16(POLLIN), revents: 0),
        ]
        let held = requests.held
        guard let ready = try? retryingInterrupts("poll", { poll(&descriptors, held ? 1 : 2, held ? -1 : timeout) }) else {
            return .failed
        }
        if ready == 0 { return .timedOut }
        if descriptors[0].revents != 0 {
            requests = take(after: requests)
            return .requests
        }
        let revents = descriptors[1].revents
        if revents & Int16(POLLIN | POLLERR) != 0 { return .readable }
        return revents & Int16(POLLHUP | POLLNVAL) != 0 ? .closed : .requests
    }
}
