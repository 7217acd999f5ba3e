import CMnl
import Glibc
import StateMachine
import Synchronization

/// Watches links, IPv4 addresses and IPv4 routes over rtnetlink.
///
/// The socket joins the multicast groups *before* the dumps are requested, so a change racing
/// with start-up shows up as an event even if the dump missed it. Everything arrives on `events`
/// from a dedicated thread; the stream ends on `stop()`, when the consumer stops iterating, or
/// if the socket fails.
public final class NetlinkWatcher: Sendable {
    public let events: AsyncStream<NetlinkEvent>
    private let control: Control
    private let thread: ReaderThread

    private init(events: AsyncStream<NetlinkEvent>, control: Control, thread: ReaderThread) {
        self.events = events
        self.control = control
        self.thread = thread
    }

    /// Opens a NETLINK_ROUTE socket subscribed to link, IPv4 address and IPv4 route changes, then
    /// dumps links, addresses and routes; `.synchronized` follows each complete dump. On overflow
    /// (ENOBUFS: the kernel dropped events) it dumps again and reports what vanished meanwhile.
    public static func start() throws -> NetlinkWatcher {
        // Large enough that a burst (a container's links and routes appearing) rarely overflows.
        try start(receiveBufferSize: 4 << 20)
    }

    static func start(receiveBufferSize: Int32) throws -> NetlinkWatcher {
        let control = try Control()
        let socket = try RouteSocket.open(
            groups: UInt32(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE),
            receiveBufferSize: receiveBufferSize)
        let (events, continuation) = AsyncStream.makeStream(of: NetlinkEvent.self)
        let reader = Reader(socket: socket, control: control, continuation: continuation)
        // Sent here so that a refused request fails start() instead of ending the stream.
        try reader.startDumps()
        continuation.onTermination = { _ in control.request(.stop) }
        let thread = try ReaderThread.start(name: "vpnsup-netlink") { reader.run() }
        return NetlinkWatcher(events: events, control: control, thread: thread)
    }

    /// Closes the socket, ends `events` and waits for the reader thread to exit.
    public func stop() {
        control.request(.stop)
        thread.join()
    }

    /// Behaves as if the kernel had reported ENOBUFS: re-dump and resynchronise (for tests).
    func simulateOverflow() {
        control.request(.resync)
    }

    /// Makes the reader leave its socket unread until `release()`, so that tests can overflow
    /// it; returns once the reader has stopped reading. Blocks briefly: tests only.
    func hold() {
        control.request(.hold)
        var acknowledged = pollfd(fd: control.held.descriptor, events: Int16(POLLIN), revents: 0)
        while poll(&acknowledged, 1, -1) < 0, errno == EINTR {}
        control.held.drain()
    }

    func release() {
        control.request(.release)
    }

    /// How many times events were lost (or declared lost) and a re-dump scheduled.
    var overflows: Int { control.overflows.withLock { $0 } }

    deinit {
        // The reader holds no reference to us; without this it would run until the consumer quit.
        control.request(.stop)
    }
}

public struct NetlinkWatcherError: Error, CustomStringConvertible, Sendable, Hashable {
    public let operation: String
    public let errno: Int32
    public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
}

/// Requests from other threads to the reader, with the eventfd that wakes it.
private final class Control: Sendable {
    enum Request { case stop, resync, hold, release }
    struct Pending { var stop = false, resync = false, held = false }

    let wakeup: WakeupEvent
    /// Signalled by the reader once it has stopped reading for a hold.
    let held: WakeupEvent
    private let pending = Mutex(Pending())
    let overflows = Mutex(0)

    init() throws {
        wakeup = try WakeupEvent()
        held = try WakeupEvent()
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

    /// The requests so far; a resync is handed out once.
    func take() -> Pending {
        wakeup.drain()
        return pending.withLock { pending in
            defer { pending.resync = false }
            return pending
        }
    }
}

/// The reader's state. @unchecked Sendable: it is handed to the reader thread once and used only
/// there afterwards (start() sends the first request before the thread exists).
private final class Reader: @unchecked Sendable {
    private let socket: RouteSocket
    private let control: Control
    private let continuation: AsyncStream<NetlinkEvent>.Continuation
    private var decoder = NetlinkDecoder()
    private var buffer: [UInt8]

    /// The dump in flight and its sequence number; nil when synchronised.
    private var dump: (kind: NetlinkDecoder.DumpKind, sequence: UInt32)?
    /// Events were lost while a dump ran: start over once it completes.
    private var resyncPending = false
    /// A message of the dump in flight may have been cut: its result cannot be trusted.
    private var dumpDamaged = false
    private var failures = 0
    private var sequence = UInt32(truncatingIfNeeded: time(nil))

    init(socket: RouteSocket, control: Control, continuation: AsyncStream<NetlinkEvent>.Continuation) {
        self.socket = socket
        self.control = control
        self.continuation = continuation
        // Dumps are sized to the reader's buffer (up to 32 KiB); multicast messages are smaller.
        buffer = [UInt8](repeating: 0, count: 64 << 10)
    }

    func startDumps() throws {
        try request(NetlinkDecoder.DumpKind.allCases[0])
    }

    /// The thread body: waits in poll(2) for netlink data or a wake-up; never spins.
    func run() {
        defer { continuation.finish() }
        // The wake-up first: while held, only it is watched.
        var descriptors = [
            pollfd(fd: control.wakeup.descriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: socket.descriptor, events: Int16(POLLIN), revents: 0),
        ]
        var requests = control.take()
        while true {
            // Requests first, so that a stop never waits behind a busy socket.
            if requests.stop { return }
            if requests.resync {
                requests.resync = false
                guard overflowed() else { return }
            }
            descriptors[0].revents = 0
            descriptors[1].revents = 0
            if poll(&descriptors, requests.held ? 1 : 2, -1) < 0 {
                if errno == EINTR { continue }
                return
            }
            if descriptors[0].revents != 0 {
                let wasHeld = requests.held
                requests = control.take()
                if requests.held, !wasHeld { control.held.signal() }
                continue
            }
            let revents = descriptors[1].revents
            if revents & Int16(POLLIN | POLLERR) != 0 {
                guard drainSocket() else { return }
            } else if revents & Int16(POLLHUP | POLLNVAL) != 0 {
                return
            }
        }
    }

    /// Reads until the socket would block. False when the watcher must end.
    private func drainSocket() -> Bool {
        NetlinkReceiver.drain(socket.descriptor, into: &buffer, message: handle) { truncated in
            // A cut message is lost; if it was part of the dump, so is the dump.
            if truncated { dumpDamaged = dump != nil }
            return overflowed()
        }
    }

    private func handle(_ bytes: [UInt8]) -> Bool {
        for item in decoder.decodeItems(bytes) {
            switch item {
            case .event(let event):
                guard emit([event]) else { return false }
            case .overrun:
                guard overflowed() else { return false }
            case let .done(sequence, portID, interrupted, code):
                guard let dump, sequence == dump.sequence, portID == socket.portID else { continue }
                if interrupted || code != 0 || dumpDamaged {
                    // The kernel's state changed mid-dump (NLM_F_DUMP_INTR), or the dump failed or
                    // lost a message: it must not be taken for the whole state.
                    decoder.abandonDump(dump.kind)
                    guard retry(dump.kind) else { return false }
                } else {
                    guard emit(decoder.endDump(dump.kind)), advance(after: dump.kind) else { return false }
                }
            case let .error(sequence, portID, code):
                guard let dump, sequence == dump.sequence, portID == socket.portID, code != 0 else { continue }
                if code == ENOBUFS {
                    // The receive queue was full when the dump began. The kernel keeps the dump
                    // running (asking again would get EBUSY) and resumes it as we read; only the
                    // overflow needs handling.
                    guard overflowed() else { return false }
                    continue
                }
                decoder.abandonDump(dump.kind)
                guard retry(dump.kind) else { return false }
            }
        }
        return true
    }

    /// Events were lost: dump everything again, now or after the dump in flight.
    private func overflowed() -> Bool {
        control.overflows.withLock { $0 += 1 }
        if dump == nil {
            return (try? startDumps()) != nil
        }
        resyncPending = true
        return true
    }

    private func advance(after kind: NetlinkDecoder.DumpKind) -> Bool {
        failures = 0
        let kinds = NetlinkDecoder.DumpKind.allCases
        if let position = kinds.firstIndex(of: kind), position + 1 < kinds.count {
            return (try? request(kinds[position + 1])) != nil
        }
        dump = nil
        if resyncPending {
            resyncPending = false
            return (try? startDumps()) != nil
        }
        return emit([.synchronized])
    }

    /// A dump failed or was interrupted: ask again, a few times (a persistent failure ends us).
    private func retry(_ kind: NetlinkDecoder.DumpKind) -> Bool {
        failures += 1
        return failures <= 5 && (try? request(kind)) != nil
    }

    private func request(_ kind: NetlinkDecoder.DumpKind) throws {
        sequence &+= 1
        try socket.requestDump(kind, sequence: sequence)
        decoder.beginDump(kind)
        dump = (kind, sequence)
        dumpDamaged = false
    }

    private func emit(_ events: [NetlinkEvent]) -> Bool {
        for event in events {
            if case .terminated = continuation.yield(event) { return false }
        }
        return true
    }
}

/// A NETLINK_ROUTE socket; closed when released.
private final class RouteSocket {
    private let socket: OpaquePointer
    let descriptor: Int32
    let portID: UInt32

    static func open(groups: UInt32, receiveBufferSize: Int32) throws -> RouteSocket {
        // O_CLOEXEC is SOCK_CLOEXEC on Linux. Naming SOCK_CLOEXEC in a file that imports CMnl
        // hides glibc's SOCK_* names from files of the same compiler batch that import only Glibc
        // (StatusChannel.swift, MetricsResponder.swift): see NftablesSocket.open.
        guard let socket = mnl_socket_open2(NETLINK_ROUTE, O_CLOEXEC) else {
            throw NetlinkWatcherError(operation: "netlink socket", errno: errno)
        }
        let descriptor = mnl_socket_get_fd(socket)
        var size = receiveBufferSize
        let length = socklen_t(MemoryLayout<Int32>.size)
        // SO_RCVBUFFORCE passes rmem_max but needs CAP_NET_ADMIN; otherwise take what we may.
        if setsockopt(descriptor, SOL_SOCKET, SO_RCVBUFFORCE, &size, length) != 0 {
            _ = setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, length)
        }
        guard mnl_socket_bind(socket, groups, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let error = NetlinkWatcherError(operation: "netlink bind", errno: errno)
            mnl_socket_close(socket)
            throw error
        }
        return RouteSocket(socket: socket, descriptor: descriptor, portID: mnl_socket_get_portid(socket))
    }

    private init(socket: OpaquePointer, descriptor: Int32, portID: UInt32) {
        self.socket = socket
        self.descriptor = descriptor
        self.portID = portID
    }

    deinit { mnl_socket_close(socket) }

    func requestDump(_ kind: NetlinkDecoder.DumpKind, sequence: UInt32) throws {
        var message = [UInt8](repeating: 0, count: 128)
        let sent = message.withUnsafeMutableBytes { raw -> Int in
            let header = mnl_nlmsg_put_header(raw.baseAddress)!
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_DUMP)
            header.pointee.nlmsg_seq = sequence
            switch kind {
            case .links:
                header.pointee.nlmsg_type = UInt16(RTM_GETLINK)
                let info = mnl_nlmsg_put_extra_header(header, MemoryLayout<ifinfomsg>.size)!
                info.assumingMemoryBound(to: ifinfomsg.self).pointee.ifi_family = UInt8(AF_UNSPEC)
                // Statistics are most of a link message and of no use here.
                mnl_attr_put_u32(header, UInt16(IFLA_EXT_MASK), UInt32(RTEXT_FILTER_SKIP_STATS))
            case .addresses:
                header.pointee.nlmsg_type = UInt16(RTM_GETADDR)
                let info = mnl_nlmsg_put_extra_header(header, MemoryLayout<ifaddrmsg>.size)!
                info.assumingMemoryBound(to: ifaddrmsg.self).pointee.ifa_family = UInt8(AF_INET)
            case .routes:
                header.pointee.nlmsg_type = UInt16(RTM_GETROUTE)
                let info = mnl_nlmsg_put_extra_header(header, MemoryLayout<rtmsg>.size)!
                info.assumingMemoryBound(to: rtmsg.self).pointee.rtm_family = UInt8(AF_INET)
            }
            return mnl_socket_sendto(socket, header, Int(header.pointee.nlmsg_len))
        }
        guard sent >= 0 else { throw NetlinkWatcherError(operation: "netlink dump request", errno: errno) }
    }
}
