import Glibc
import StateMachine
import Synchronization
import SystemSupport

/// The unix socket `vpnsup status` and `health` talk to: each connection receives one snapshot
/// (JSON) and is closed.
///
/// One thread serves every client from a poll(2) loop over non-blocking sockets: a client that
/// never reads holds only its own snapshot, for at most `clientDeadline`, and never delays
/// another client (nor the supervisor, which the snapshot closure does not wait for).
public final class StatusChannel: Sendable {
    /// How long one client may take to read its snapshot before it is dropped.
    public static let clientDeadline: Duration = .seconds(2)
    /// Clients served at once; more wait in the listen backlog until one is done.
    public static let maximumClients = 64
    /// What `fetch` waits for a whole answer by default: longer than `clientDeadline`.
    public static let fetchTimeout: Duration = .seconds(3)

    private let path: String
    private let identity: FileIdentity
    private let wakeup: WakeupEvent
    private let stopped = Mutex(false)

    private init(path: String, identity: FileIdentity, wakeup: WakeupEvent) {
        self.path = path
        self.identity = identity
        self.wakeup = wakeup
    }

    /// Listens at `path` (replacing a stale socket, refusing anything else there) and answers
    /// every connection with `snapshot()` on a dedicated thread. Root only, or root and `group`
    /// (mode 0660) when one is given.
    public static func listen(at path: String, group: UInt32? = nil,
                              snapshot: @escaping @Sendable () -> [UInt8]) throws(ChannelError) -> StatusChannel {
        let (listener, identity) = try UnixSocket.listen(at: path, mode: group == nil ? 0o600 : 0o660, backlog: 16)
        do throws(SystemError) {
            if let group {
                try retryingInterrupts("chown \(escapedForDisplay(path))") { lchown(path, 0, group) }
            }
            // Accepting never blocks: a client that gave up between poll and accept costs nothing.
            try retryingInterrupts("fcntl") { fcntl(listener.rawValue, F_SETFL, O_NONBLOCK) }
            let wakeup = try WakeupEvent()
            let channel = StatusChannel(path: path, identity: identity, wakeup: wakeup)
            try ReaderThread.start(name: "vpnsup-status") {
                var server = Server(listener: listener, wakeup: wakeup, snapshot: snapshot)
                server.run()
            }
            return channel
        } catch {
            UnixSocket.remove(path, ifStill: identity)
            throw .system(error)
        }
    }

    /// Stops answering and removes the socket.
    public func close() {
        let first = stopped.withLock { stopped in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        UnixSocket.remove(path, ifStill: identity)
        wakeup.signal()
    }

    /// Connects to the status socket at `path` and returns what it sends, within `timeout` in all.
    /// The server must be root's (`serverUID`): a socket anyone else serves is refused, so a
    /// forged status cannot pass for vpnsup's.
    public static func fetch(from path: String, timeout: Duration = fetchTimeout,
                             serverUID: UInt32 = 0) throws(ChannelError) -> [UInt8] {
        try UnixSocket.fetch(from: path, timeout: timeout, serverUID: serverUID)
    }
}

/// The status thread's loop: accepts clients and writes each its snapshot as the socket takes it.
private struct Server {
    private struct Client {
        let socket: OwnedDescriptor
        let snapshot: [UInt8]
        var offset = 0
        let deadline: ContinuousClock.Instant
    }

    let listener: OwnedDescriptor
    let wakeup: WakeupEvent
    let snapshot: @Sendable () -> [UInt8]
    private var clients: [Client] = []
    /// After accept(2) failed for want of descriptors (EMFILE), the listener rests until then
    /// instead of waking the loop again at once.
    private var listenerRestsUntil: ContinuousClock.Instant?
    private static let listenerRest: Duration = .milliseconds(100)

    init(listener: OwnedDescriptor, wakeup: WakeupEvent, snapshot: @escaping @Sendable () -> [UInt8]) {
        self.listener = listener
        self.wakeup = wakeup
        self.snapshot = snapshot
    }

    mutating func run() {
        while true {
            // The wake-up, then the listener while there is room, then each client awaiting room.
            var descriptors = [pollfd(fd: wakeup.descriptor, events: Int16(POLLIN), revents: 0)]
            if let rest = listenerRestsUntil, rest <= ContinuousClock.now { listenerRestsUntil = nil }
            let accepting = clients.count < StatusChannel.maximumClients && listenerRestsUntil == nil
            descriptors.append(pollfd(fd: accepting ? listener.rawValue : -1, events: Int16(POLLIN), revents: 0))
            descriptors += clients.map { pollfd(fd: $0.socket.rawValue, events: Int16(POLLOUT), revents: 0) }
            let wakeAt = (clients.map(\.deadline) + [listenerRestsUntil].compactMap { $0 }).min()
            let timeout = wakeAt.map { max(1, pollTimeout(until: $0)) } ?? -1
            guard (try? retryingInterrupts("poll", { poll(&descriptors, nfds_t(descriptors.count), timeout) })) != nil else { return }
            if descriptors[0].revents != 0 { return }
            // Clients first: their indices match the descriptors polled.
            var index = clients.count - 1
            while index >= 0 {
                if descriptors[2 + index].revents != 0 { serve(at: index) }
                index -= 1
            }
            let now = ContinuousClock.now
            clients.removeAll { $0.deadline <= now }  // a client that would not read in time
            if descriptors[1].revents != 0 { acceptClients() }
        }
    }

    /// Accepts every waiting connection while there is room; each gets its snapshot at once,
    /// and waits in `clients` only if the socket buffer cannot take all of it.
    private mutating func acceptClients() {
        while clients.count < StatusChannel.maximumClients {
            let fd: Int32
            do {
                fd = try UnixSocket.accept(on: listener.rawValue)
            } catch {
                // EAGAIN: none left. Out of descriptors: rest, or the loop would spin on it.
                if error.errno != EAGAIN && error.errno != EWOULDBLOCK {
                    listenerRestsUntil = ContinuousClock.now + Self.listenerRest
                }
                return
            }
            let socket = OwnedDescriptor(fd)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
            clients.append(Client(socket: socket, snapshot: snapshot(),
                                  deadline: ContinuousClock.now + StatusChannel.clientDeadline))
            serve(at: clients.count - 1)
        }
    }

    /// Writes what the client's socket takes; drops the client once done or gone.
    private mutating func serve(at index: Int) {
        switch UnixSocket.send(clients[index].snapshot, from: &clients[index].offset, on: clients[index].socket.rawValue) {
        case .wouldBlock: break
        case .done, .failed: clients.remove(at: index)
        }
    }
}
