import CNftnl
import Glibc
import SystemSupport

/// One nfnetlink transaction under construction: batch begin, messages, batch end, laid out
/// contiguously so a single sendto delivers it (the kernel commits a batch only if it arrives in
/// one datagram). Each message gets its own sequence number so errors can be traced to it.
final class NftBatch {
    /// Large enough for any single netlink message (nested attribute lengths are 16-bit).
    private static let scratchSize = 128 * 1024

    private(set) var bytes: [UInt8] = []
    /// What each sequence number asked for, for error messages.
    private(set) var descriptions: [UInt32: String] = [:]
    private(set) var messagesWantingAck = 0
    let firstSequence: UInt32
    private(set) var nextSequence: UInt32
    private let scratch: UnsafeMutableRawPointer
    private var dirtyBytes: Int

    init(firstSequence: UInt32) {
        self.firstSequence = firstSequence
        nextSequence = firstSequence
        scratch = .allocate(byteCount: NftBatch.scratchSize, alignment: 8)
        dirtyBytes = NftBatch.scratchSize // fresh memory is uninitialised
        append("batch begin", ack: false) { buffer, seq in nftnl_batch_begin(buffer, seq) }
    }

    deinit { scratch.deallocate() }

    /// Appends one message. `build` writes it into a zeroed scratch buffer and returns its header.
    func append(_ description: String, ack: Bool = true,
                _ build: (UnsafeMutablePointer<CChar>, UInt32) -> UnsafeMutablePointer<nlmsghdr>?) {
        let seq = nextSequence
        nextSequence &+= 1
        // Only the bytes the previous message dirtied need zeroing (padding must be zero).
        memset(scratch, 0, dirtyBytes)
        guard let nlh = build(scratch.assumingMemoryBound(to: CChar.self), seq) else {
            preconditionFailure("libnftnl built no message header") // it only writes into the buffer
        }
        if ack { nlh.pointee.nlmsg_flags |= UInt16(NLM_F_ACK); messagesWantingAck += 1 }
        let length = netlinkAligned(Int(nlh.pointee.nlmsg_len))
        precondition(length <= NftBatch.scratchSize, "netlink message overran the scratch buffer")
        dirtyBytes = length
        bytes.append(contentsOf: UnsafeRawBufferPointer(start: scratch, count: length))
        descriptions[seq] = description
    }

    /// Appends an NFT_MSG_* message (family inet) whose attributes `payload` adds.
    func append(_ description: String, type: UInt32, flags: Int32,
                _ payload: (UnsafeMutablePointer<nlmsghdr>) -> Void) {
        append(description) { buffer, seq in
            // The nftnl_*_nlmsg_build_hdr macros all alias this function; it adds the subsystem.
            let nlh = nftnl_nlmsg_build_hdr(buffer, UInt16(type), UInt16(NFPROTO_INET), UInt16(flags), seq)
            if let nlh { payload(nlh) }
            return nlh
        }
    }

    func finish() {
        append("batch end", ack: false) { buffer, seq in nftnl_batch_end(buffer, seq) }
    }

    var messageCount: Int { Int(nextSequence &- firstSequence) }
}

/// An error the kernel reported for one message of a request.
struct NftKernelError {
    var sequence: UInt32
    var ack: NetlinkAck
}

/// A NETLINK_NETFILTER socket with extended ACKs and buffers sized for large batches.
final class NftSocket {
    private let socket: NetlinkSocket
    private var sequence: UInt32
    private var receiveBuffer = [UInt8](receiving: 64 * 1024)
    private var sendBufferSize: Int
    private var receiveBufferSize: Int
    /// nft's estimate of the receive-buffer room one ACK needs (NFT_MNL_ACK_MAXSIZE).
    private static let ackSize = 1024

    init() throws(FirewallError) {
        do {
            socket = try NetlinkSocket(protocol: NETLINK_NETFILTER)
        } catch {
            throw FirewallError(error)
        }
        // Dumps arrive in datagrams of up to 32 KiB; the 64 KiB buffer never truncates one.
        sequence = socket.nextSequence()
        // CAP_ACK: errors do not echo the (possibly huge) request. EXT_ACK: the kernel says why.
        socket.requestExtendedAcks()
        // A dump that never ends must not hang the supervisor.
        socket.setReceiveTimeout(seconds: 5)
        sendBufferSize = socket.bufferSize(.send)
        receiveBufferSize = socket.bufferSize(.receive)
    }

    func makeBatch() -> NftBatch { NftBatch(firstSequence: sequence) }

    /// The port the kernel bound this socket to (unique in the network namespace while it is open).
    var portID: UInt32 { socket.portID }

    /// Sends a finished batch and collects the kernel's verdict on it. Netlink hands the datagram
    /// to nfnetlink synchronously, so by the time sendto returns every ACK and error is queued:
    /// drain them without blocking. Returns the errors (empty on success) and whether any reply
    /// was lost to a receive-buffer overflow.
    func send(_ batch: NftBatch) throws(FirewallError) -> (errors: [NftKernelError], lostReplies: Bool) {
        sequence = batch.nextSequence
        discardPending()
        // A batch larger than the send buffer fails with EMSGSIZE; raise it as nft does.
        // (The kernel doubles what it is given and reports the doubled value.)
        if batch.bytes.count + 4096 > sendBufferSize / 2 {
            sendBufferSize = socket.setBufferSize(.send, to: batch.bytes.count + 4096)
        }
        if batch.messagesWantingAck * NftSocket.ackSize > receiveBufferSize / 2 {
            receiveBufferSize = socket.setBufferSize(.receive, to: batch.messagesWantingAck * NftSocket.ackSize)
        }
        do {
            try socket.send(batch.bytes, operation: "sending \(batch.bytes.count) bytes of nftables batch")
        } catch {
            throw FirewallError(error)
        }

        // Sequence numbers may wrap: compare offsets from the first, not the raw values.
        let first = batch.firstSequence, count = UInt32(batch.messageCount)
        var errors: [NftKernelError] = []
        var acks = 0
        var lostReplies = false
        while true {
            let received: Int
            do {
                guard let got = try socket.receive(into: &receiveBuffer, wait: false,
                                                   operation: "reading the kernel's replies to an nftables batch") else { break }
                received = got
            } catch where error.errno == ENOBUFS {
                lostReplies = true
                continue
            } catch {
                throw FirewallError(error)
            }
            guard received <= receiveBuffer.count else { lostReplies = true; continue }
            let bytes = Array(receiveBuffer[..<received])
            for message in NetlinkMessages(bytes) where message.header.sequence &- first < count {
                guard let ack = NetlinkAck(bytes, message) else { continue }
                if ack.errno == 0 { acks += 1 } else { errors.append(NftKernelError(sequence: message.header.sequence, ack: ack)) }
            }
        }
        // Every message asked for an ACK; fewer replies than that means some were dropped.
        if errors.isEmpty && acks < batch.messagesWantingAck { lostReplies = true }
        return (errors.sorted { ($0.sequence &- first) < ($1.sequence &- first) }, lostReplies)
    }

    /// Runs one NLM_F_DUMP request of `type` and calls `body` with each reply message. `payload`
    /// may add filter attributes (the kernel honours the table filter for rule dumps).
    /// If the ruleset changed during the dump (NLM_F_DUMP_INTR) it throws `.interrupted`; the
    /// caller starts over.
    func dump(type: UInt32, payload: (UnsafeMutablePointer<nlmsghdr>) -> Void,
              _ body: (UnsafePointer<nlmsghdr>) throws(FirewallError) -> Void) throws(FirewallError) {
        // No NLM_F_ACK: a dump ends with NLMSG_DONE.
        try exchange(type: type, flags: Int32(NLM_F_DUMP), payload: payload, body)
    }

    /// Sends one acknowledged request (outside any batch) and passes each reply to `body`.
    func request(type: UInt32, payload: (UnsafeMutablePointer<nlmsghdr>) -> Void,
                 _ body: (UnsafePointer<nlmsghdr>) throws(FirewallError) -> Void) throws(FirewallError) {
        try exchange(type: type, flags: Int32(NLM_F_ACK), payload: payload, body)
    }

    /// Sends one message and reads replies until NLMSG_DONE or the ACK; a kernel error is thrown.
    private func exchange(type: UInt32, flags: Int32, payload: (UnsafeMutablePointer<nlmsghdr>) -> Void,
                          _ body: (UnsafePointer<nlmsghdr>) throws(FirewallError) -> Void) throws(FirewallError) {
        discardPending()
        let seq = sequence
        sequence &+= 1
        var message = [UInt8](repeating: 0, count: 4096)
        let length: Int = message.withUnsafeMutableBytes { raw in
            let buffer = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
            guard let nlh = nftnl_nlmsg_build_hdr(buffer, UInt16(type), UInt16(NFPROTO_INET),
                                                  UInt16(flags), seq) else { return 0 }
            payload(nlh)
            return Int(nlh.pointee.nlmsg_len)
        }
        do {
            try socket.send(Array(message[..<length]), operation: "sending an nftables request")
        } catch {
            throw FirewallError(error)
        }

        var done = false
        var interrupted = false
        var failure: FirewallError?
        while !done {
            let received: Int
            do {
                received = try socket.receive(into: &receiveBuffer, operation: "reading an nftables reply") ?? 0
            } catch {
                throw FirewallError(error)
            }
            guard received <= receiveBuffer.count else {
                throw FirewallError(kind: .system, message: "an nftables reply of \(received) bytes did not fit the receive buffer")
            }
            let bytes = Array(receiveBuffer[..<received])
            for reply in NetlinkMessages(bytes) where reply.header.sequence == seq {  // else a stale reply to an abandoned request
                if reply.header.flags & UInt16(NLM_F_DUMP_INTR) != 0 { interrupted = true }
                if reply.header.type == UInt16(NLMSG_DONE) {
                    done = true
                    break
                }
                if let ack = NetlinkAck(bytes, reply) {
                    // Error 0 is the ACK that ends a non-dump request.
                    if ack.errno != 0 {
                        failure = FirewallError(kernel: NftKernelError(sequence: seq, ack: ack), doing: "nftables request \(type)")
                    }
                    done = true
                    break
                }
                failure = Self.withHeader(bytes, at: reply.offset, body)
                if failure != nil {
                    done = true
                    break
                }
            }
        }
        if let failure { throw failure }
        if interrupted { throw FirewallError(kind: .interrupted, message: "the ruleset changed while it was being read") }
    }

    // MARK: - Helpers

    /// Calls `body` with the message at `offset` of `bytes` as libnftnl's parsers take it.
    private static func withHeader(_ bytes: [UInt8], at offset: Int,
                                   _ body: (UnsafePointer<nlmsghdr>) throws(FirewallError) -> Void) -> FirewallError? {
        bytes.withUnsafeBytes { raw in
            // Messages start 4-byte aligned within a buffer the allocator aligned: a valid nlmsghdr.
            let header = (raw.baseAddress! + offset).assumingMemoryBound(to: nlmsghdr.self)
            do throws(FirewallError) {
                try body(header)
                return nil
            } catch {
                return error
            }
        }
    }

    /// Drops replies left over from an earlier request that was abandoned by a thrown error.
    private func discardPending() {
        while true {
            do {
                guard try socket.receive(into: &receiveBuffer, wait: false, operation: "discarding stale replies") != nil else { return }
            } catch where error.errno == ENOBUFS {
                continue
            } catch {
                return
            }
        }
    }
}
