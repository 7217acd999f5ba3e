import CNetlink
import Glibc
import Synchronization
import SystemSupport

/// Watches the nftables ruleset for changes to one table made by anyone but vpnsup, so that an
/// outside `nft flush ruleset` (or a deleted rule, a dormant flag...) is noticed and repaired
/// without polling.
///
/// A NETLINK_NETFILTER socket joins NFNLGRP_NFTABLES, where the kernel announces every committed
/// transaction: one message per object touched, then NFT_MSG_NEWGEN. vpnsup's own commits are
/// recognised by the netlink port of the socket that sent them, which the kernel stamps on every
/// notification (nlmsg_pid): unlike a generation number it needs no round trip after the commit,
/// so there is no window in which our own notifications could arrive before we know they are ours,
/// and no other process can send from our port. A classic BPF filter drops those messages in the
/// kernel, so our own large commits cannot fill the receive buffer; the decoder checks the port
/// again in case the filter could not be attached.
///
/// Everything arrives from a dedicated thread, on `events` or at the receiver it was started with;
/// the stream ends on `stop()`, when the consumer stops iterating, or if the socket fails.
public final class NftablesMonitor: Sendable {
    /// The events, unless the monitor was started with a receiver (then this stream is empty).
    public let events: AsyncStream<NftablesEvent>
    private let control: ReaderControl
    private let thread: ReaderThread
    /// Whether the kernel drops the ignored ports' messages (false: only user space does).
    public let filteredInKernel: Bool

    private init(events: AsyncStream<NftablesEvent>, control: ReaderControl, thread: ReaderThread, filteredInKernel: Bool) {
        self.events = events
        self.control = control
        self.thread = thread
        self.filteredInKernel = filteredInKernel
    }

    /// Starts reporting outside changes to table `inet <table>`. Transactions sent from the
    /// netlink ports in `ignoring` (vpnsup's own commit socket) are never reported.
    /// With a `receiver`, the events go to it on the monitor's thread.
    public static func start(table: String, ignoring portIDs: Set<UInt32>,
                             receiver: EventSink<NftablesEvent>? = nil) throws(SystemError) -> NftablesMonitor {
        // A flush of a big ruleset is thousands of messages; a repair commit of ours is filtered out.
        try start(table: table, ignoring: portIDs, receiveBufferSize: 4 << 20, kernelFilter: true, receiver: receiver)
    }

    static func start(table: String, ignoring portIDs: Set<UInt32>, receiveBufferSize: Int,
                      kernelFilter: Bool, receiver: EventSink<NftablesEvent>? = nil) throws(SystemError) -> NftablesMonitor {
        let control = try ReaderControl()
        let socket = try NftablesSocket.open(receiveBufferSize: receiveBufferSize,
                                             dropping: kernelFilter ? portIDs : [])
        let (events, sink) = receiver.map { (EventSink<NftablesEvent>.none, $0) }
            ?? EventSink.stream { control.request(.stop) }
        let reader = MonitorReader(socket: socket, control: control, sink: sink,
                                   decoder: NftablesDecoder(table: table, ignoring: portIDs))
        let thread = try ReaderThread.start(name: "vpnsup-nftables") { reader.run() }
        return NftablesMonitor(events: events, control: control, thread: thread,
                               filteredInKernel: kernelFilter && !portIDs.isEmpty && socket.filtered)
    }

    /// Closes the socket, ends `events` and waits for the reader thread to exit.
    public func stop() {
        control.request(.stop)
        thread.join()
    }

    /// Makes the reader leave its socket unread until `release()`, so that tests can overflow
    /// it; returns once the reader has stopped reading. Blocks briefly: tests only.
    func hold() { control.hold() }

    func release() { control.request(.release) }

    /// How many times notifications were lost (tests).
    var overflows: Int { control.overflows.load(ordering: .relaxed) }
    /// Messages of ignored ports that reached user space (0 while the kernel filter works; tests).
    var ignoredMessages: Int { control.ignoredMessages.load(ordering: .relaxed) }

    deinit {
        // The reader holds no reference to us; without this it would run until the consumer quit.
        control.request(.stop)
    }
}

/// The reader's state. @unchecked Sendable: handed to the reader thread once, used only there.
private final class MonitorReader: @unchecked Sendable {
    /// How long changes wait for the NEWGEN that ends their transaction before being reported
    /// anyway. The kernel sends it right after them, so this only matters if it was never sent.
    private static let transactionEndWait: Int32 = 200 // ms

    private let socket: NftablesSocket
    private let control: ReaderControl
    private let sink: EventSink<NftablesEvent>
    private var decoder: NftablesDecoder
    private var buffer: [UInt8]

    init(socket: NftablesSocket, control: ReaderControl, sink: EventSink<NftablesEvent>, decoder: NftablesDecoder) {
        self.socket = socket
        self.control = control
        self.sink = sink
        self.decoder = decoder
        // The kernel batches a transaction's notifications into datagrams of a page or two.
        buffer = [UInt8](receiving: 64 << 10)
    }

    /// The thread body: waits for notifications or a request; never spins.
    func run() {
        defer { sink.finish() }
        // A hold asked for before the thread ran is acknowledged here.
        var requests = control.take()
        while !requests.stop {
            let timeout = decoder.hasPending ? Self.transactionEndWait : -1
            switch control.wait(for: socket.descriptor, requests: &requests, timeout: timeout) {
            case .requests: continue
            case .timedOut: guard emit(decoder.flush().map { [$0] } ?? []) else { return }
            case .readable: guard drainSocket() else { return }
            case .closed, .failed: return
            }
        }
    }

    /// Reads until the socket would block. False when the monitor must end.
    private func drainSocket() -> Bool {
        socket.netlink.drain(into: &buffer, message: { bytes in
            let events = decoder.decode(bytes)
            control.ignoredMessages.store(decoder.ignoredMessages, ordering: .relaxed)
            if events.contains(.resync) { control.countOverflow() }
            return emit(events)
        }, overflow: { _ in overflowed() })
    }

    /// Notifications were lost: what was seen of a transaction is incomplete, and the table may
    /// have changed unseen. Report a resync; the owner checks the table.
    private func overflowed() -> Bool {
        control.countOverflow()
        decoder.discardPending()
        return emit([.resync])
    }

    private func emit(_ events: [NftablesEvent]) -> Bool {
        for event in events {
            guard sink.deliver(event) else { return false }
        }
        return true
    }
}

/// A NETLINK_NETFILTER socket in the NFNLGRP_NFTABLES group, with the filter that drops vpnsup's
/// own notifications in the kernel when it could be attached.
private struct NftablesSocket {
    let netlink: NetlinkSocket
    /// Whether the filter dropping the ignored ports' messages is attached.
    let filtered: Bool

    var descriptor: Int32 { netlink.descriptor }

    static func open(receiveBufferSize: Int, dropping portIDs: Set<UInt32>) throws(SystemError) -> NftablesSocket {
        let netlink = try NetlinkSocket(protocol: NETLINK_NETFILTER)
        netlink.setBufferSize(.receive, to: receiveBufferSize)
        // The filter goes on before the group is joined, so none of our messages ever queue up.
        let filtered = portIDs.isEmpty ? false : attachFilter(netlink.descriptor, dropping: portIDs.sorted())
        try netlink.join(group: UInt32(NFNLGRP_NFTABLES.rawValue))
        return NftablesSocket(netlink: netlink, filtered: filtered)
    }

    /// Classic BPF: drop a datagram whose first message was sent from one of `portIDs`. The kernel
    /// packs only one transaction's notifications (one sender) into a datagram, so the first
    /// header speaks for all of them.
    private static func attachFilter(_ descriptor: Int32, dropping portIDs: [UInt32]) -> Bool {
        func statement(_ code: Int32, _ k: UInt32, jt: UInt8 = 0, jf: UInt8 = 0) -> vpnsup_bpf_instruction {
            vpnsup_bpf_instruction(code: UInt16(code), jt: jt, jf: jf, k: k)
        }
        let count = portIDs.count
        guard count < 200 else { return false } // jump offsets are 8-bit
        // BPF loads in network order; nlmsg_pid (offset 12) is in host order: compare byte-swapped.
        var program = [statement(BPF_LD | BPF_W | BPF_ABS, 12)]
        for (index, portID) in portIDs.enumerated() {
            // Jump over the remaining comparisons and the accept, onto the drop.
            program.append(statement(BPF_JMP | BPF_JEQ | BPF_K, portID.bigEndian, jt: UInt8(count - index), jf: 0))
        }
        program.append(statement(BPF_RET | BPF_K, UInt32.max)) // accept, whole
        program.append(statement(BPF_RET | BPF_K, 0))          // drop
        return program.withUnsafeMutableBufferPointer { instructions in
            vpnsup_attach_socket_filter(descriptor, instructions.baseAddress, UInt16(instructions.count)) == 0
        }
    }
}
