import CNetlink
import Glibc
import StateMachine
import Synchronization
import SystemSupport

/// Watches links, IPv4 addresses and IPv4 routes (and, when asked, IPv4 neighbours) over rtnetlink.
///
/// The socket joins the multicast groups *before* the dumps are requested, so a change racing
/// with start-up shows up as an event even if the dump missed it. Everything arrives from a
/// dedicated thread, on `events` or at the receiver it was started with; the stream ends on
/// `stop()`, when the consumer stops iterating, or if the socket fails.
public final class NetlinkWatcher: Sendable {
    /// The events, unless the watcher was started with a receiver (then this stream is empty).
    public let events: AsyncStream<NetlinkEvent>
    private let control: ReaderControl
    private let thread: ReaderThread

    private init(events: AsyncStream<NetlinkEvent>, control: ReaderControl, thread: ReaderThread) {
        self.events = events
        self.control = control
        self.thread = thread
    }

    /// Opens a NETLINK_ROUTE socket subscribed to link, IPv4 address and IPv4 route changes, then
    /// dumps links, addresses and routes; `.synchronized` follows each complete dump. On overflow
    /// (ENOBUFS: the kernel dropped events) it dumps again and reports what vanished meanwhile.
    /// With `neighbours`, IPv4 neighbour changes too (`.neighbour`; not dumped: only changes
    /// matter to `vpnsup join`, which follows its gateway on a FAILED entry).
    public static func start(neighbours: Bool = false) throws(SystemError) -> NetlinkWatcher {
        try start(receiveBufferSize: defaultReceiveBufferSize, neighbours: neighbours, receiver: nil)
    }

    /// As `start(neighbours:)`, the events going to `receiver` on the watcher's thread.
    public static func start(neighbours: Bool = false,
                             receiver: EventSink<NetlinkEvent>) throws(SystemError) -> NetlinkWatcher {
        try start(receiveBufferSize: defaultReceiveBufferSize, neighbours: neighbours, receiver: receiver)
    }

    /// Large enough that a burst (a container's links and routes appearing) rarely overflows.
    private static let defaultReceiveBufferSize = 4 << 20

    static func start(receiveBufferSize: Int, neighbours: Bool = false,
                      receiver: EventSink<NetlinkEvent>? = nil) throws(SystemError) -> NetlinkWatcher {
        let control = try ReaderControl()
        let socket = try NetlinkSocket(
            protocol: NETLINK_ROUTE,
            groups: UInt32(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | (neighbours ? RTMGRP_NEIGH : 0)))
        socket.setBufferSize(.receive, to: receiveBufferSize)
        let (events, sink) = receiver.map { (EventSink<NetlinkEvent>.none, $0) }
            ?? EventSink.stream { control.request(.stop) }
        let reader = Reader(socket: socket, control: control, sink: sink)
        // Sent here so that a refused request fails start() instead of ending the stream.
        try reader.startDumps()
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
    func hold() { control.hold() }

    func release() { control.request(.release) }

    /// How many times events were lost (or declared lost) and a re-dump scheduled.
    var overflows: Int { control.overflows.load(ordering: .relaxed) }

    deinit {
        // The reader holds no reference to us; without this it would run until the consumer quit.
        control.request(.stop)
    }
}

/// The reader's state. @unchecked Sendable: it is handed to the reader thread once and used only
/// there afterwards (start() sends the first request before the thread exists).
private final class Reader: @unchecked Sendable {
    private let socket: NetlinkSocket
    private let control: ReaderControl
    private let sink: EventSink<NetlinkEvent>
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

    init(socket: NetlinkSocket, control: ReaderControl, sink: EventSink<NetlinkEvent>) {
        self.socket = socket
        self.control = control
        self.sink = sink
        // Dumps are sized to the reader's buffer (up to 32 KiB); multicast messages are smaller.
        buffer = [UInt8](receiving: 64 << 10)
    }

    func startDumps() throws(SystemError) {
        try request(NetlinkDecoder.DumpKind.allCases[0])
    }

    /// The thread body: waits for netlink data or a request; never spins.
    func run() {
        defer { sink.finish() }
        var requests = control.take()
        while true {
            // Requests first, so that a stop never waits behind a busy socket.
            if requests.stop { return }
            if requests.resync {
                requests.resync = false
                guard overflowed() else { return }
            }
            switch control.wait(for: socket.descriptor, requests: &requests) {
            case .requests, .timedOut: continue
            case .readable: guard drainSocket() else { return }
            case .closed, .failed: return
            }
        }
    }

    /// Reads until the socket would block. False when the watcher must end.
    private func drainSocket() -> Bool {
        socket.drain(into: &buffer, message: handle) { truncated in
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
        control.countOverflow()
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

    private func request(_ kind: NetlinkDecoder.DumpKind) throws(SystemError) {
        sequence &+= 1
        var request = Self.dumpRequest(kind)
        request.sequence = sequence
        try socket.send(request.bytes, operation: "netlink dump request")
        decoder.beginDump(kind)
        dump = (kind, sequence)
        dumpDamaged = false
    }

    private func emit(_ events: [NetlinkEvent]) -> Bool {
        for event in events {
            guard sink.deliver(event) else { return false }
        }
        return true
    }

    /// The RTM_GET* dump request of `kind` (IPv4 only for addresses and routes).
    static func dumpRequest(_ kind: NetlinkDecoder.DumpKind) -> NetlinkRequest {
        let flags = UInt16(NLM_F_REQUEST | NLM_F_DUMP)
        switch kind {
        case .links:
            var request = NetlinkRequest(type: UInt16(RTM_GETLINK), flags: flags)
            request.append(ifinfomsg(ifi_family: UInt8(AF_UNSPEC), __ifi_pad: 0, ifi_type: 0, ifi_index: 0, ifi_flags: 0, ifi_change: 0))
            // Statistics are most of a link message and of no use here.
            request.appendAttribute(UInt16(IFLA_EXT_MASK), UInt32(RTEXT_FILTER_SKIP_STATS))
            return request
        case .addresses:
            var request = NetlinkRequest(type: UInt16(RTM_GETADDR), flags: flags)
            request.append(ifaddrmsg(ifa_family: UInt8(AF_INET), ifa_prefixlen: 0, ifa_flags: 0, ifa_scope: 0, ifa_index: 0))
            return request
        case .routes:
            var request = NetlinkRequest(type: UInt16(RTM_GETROUTE), flags: flags)
            var message = rtmsg()
            message.rtm_family = UInt8(AF_INET)
            request.append(message)
            return request
        }
    }
}
