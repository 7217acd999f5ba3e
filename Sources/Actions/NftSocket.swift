import CNftnl
import Glibc

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
        let length = Int(vpnsup_nft_nlmsg_align(nlh.pointee.nlmsg_len))
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
    var errno: Int32
    var message: String?
    var missingAttribute: Int?
}

/// A NETLINK_NETFILTER socket (libmnl), with extended ACKs and buffers sized for large batches.
final class NftSocket {
    private let socket: OpaquePointer
    private let fd: Int32
    private var sequence: UInt32
    private let receiveBuffer: UnsafeMutableRawBufferPointer
    private var sendBufferSize: Int
    private var receiveBufferSize: Int
    /// nft's estimate of the receive-buffer room one ACK needs (NFT_MNL_ACK_MAXSIZE).
    private static let ackSize = 1024

    init() throws(FirewallError) {
        guard let socket = mnl_socket_open(NETLINK_NETFILTER) else { throw FirewallError.system("opening a NETLINK_NETFILTER socket") }
        self.socket = socket
        fd = mnl_socket_get_fd(socket)
        // Dumps arrive in datagrams of up to 32 KiB; a larger buffer never truncates one.
        receiveBuffer = .allocate(byteCount: 64 * 1024, alignment: 8)
        sendBufferSize = 0
        receiveBufferSize = 0
        sequence = UInt32(truncatingIfNeeded: time(nil))
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let error = FirewallError.system("binding the netfilter socket")
            mnl_socket_close(socket); receiveBuffer.deallocate()
            throw error
        }
        var one: Int32 = 1
        // CAP_ACK: errors do not echo the (possibly huge) request. EXT_ACK: the kernel says why.
        _ = mnl_socket_setsockopt(socket, NETLINK_CAP_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = mnl_socket_setsockopt(socket, NETLINK_EXT_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        // A dump that never ends must not hang the supervisor.
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        sendBufferSize = socketBufferSize(SO_SNDBUF)
        receiveBufferSize = socketBufferSize(SO_RCVBUF)
    }

    deinit {
        mnl_socket_close(socket)
        receiveBuffer.deallocate()
    }

    func makeBatch() -> NftBatch { NftBatch(firstSequence: sequence) }

    /// The port the kernel bound this socket to (unique in the network namespace while it is open).
    var portID: UInt32 { mnl_socket_get_portid(socket) }

    /// Sends a finished batch and collects the kernel's verdict on it. Netlink hands the datagram
    /// to nfnetlink synchronously, so by the time sendto returns every ACK and error is queued:
    /// drain them without blocking. Returns the errors (empty on success) and whether any reply
    /// was lost to a receive-buffer overflow.
    func send(_ batch: NftBatch) throws(FirewallError) -> (errors: [NftKernelError], lostReplies: Bool) {
        sequence = batch.nextSequence
        discardPending()
        // A batch larger than the send buffer fails with EMSGSIZE; raise it as nft does.
        ensureBuffer(SO_SNDBUFFORCE, fallback: SO_SNDBUF, size: batch.bytes.count + 4096, current: &sendBufferSize)
        ensureBuffer(SO_RCVBUFFORCE, fallback: SO_RCVBUF, size: batch.messagesWantingAck * NftSocket.ackSize,
                     current: &receiveBufferSize)
        let sent = batch.bytes.withUnsafeBytes { mnl_socket_sendto(socket, $0.baseAddress, $0.count) }
        guard sent == batch.bytes.count else { throw FirewallError.system("sending \(batch.bytes.count) bytes of nftables batch") }

        // Sequence numbers may wrap: compare offsets from the first, not the raw values.
        let first = batch.firstSequence, count = UInt32(batch.messageCount)
        var errors: [NftKernelError] = []
        var acks = 0
        var lostReplies = false
        while true {
            let received = recv(fd, receiveBuffer.baseAddress, receiveBuffer.count, Int32(MSG_DONTWAIT | MSG_TRUNC))
            if received < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { break }
                if errno == ENOBUFS { lostReplies = true; continue }
                throw FirewallError.system("reading the kernel's replies to an nftables batch")
            }
            guard received <= receiveBuffer.count else { lostReplies = true; continue }
            forEachMessage(received) { nlh in
                guard nlh.pointee.nlmsg_type == UInt16(NLMSG_ERROR), nlh.pointee.nlmsg_seq &- first < count else { return true }
                if let error = kernelError(nlh) { errors.append(error) } else { acks += 1 }
                return true
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
        let sent = message.withUnsafeBytes { mnl_socket_sendto(socket, $0.baseAddress, length) }
        guard sent == length else { throw FirewallError.system("sending an nftables request") }

        var done = false
        var interrupted = false
        var failure: FirewallError?
        while !done {
            let received = recv(fd, receiveBuffer.baseAddress, receiveBuffer.count, Int32(MSG_TRUNC))
            if received < 0 {
                if errno == EINTR { continue }
                throw FirewallError.system("reading an nftables reply")
            }
            guard received <= receiveBuffer.count else {
                throw FirewallError(kind: .system, message: "an nftables reply of \(received) bytes did not fit the receive buffer")
            }
            forEachMessage(received) { nlh in
                guard nlh.pointee.nlmsg_seq == seq else { return true } // a stale reply to an abandoned request
                if nlh.pointee.nlmsg_flags & UInt16(NLM_F_DUMP_INTR) != 0 { interrupted = true }
                switch Int32(nlh.pointee.nlmsg_type) {
                case NLMSG_DONE:
                    done = true
                    return false
                case NLMSG_ERROR:
                    // Error 0 is the ACK that ends a non-dump request.
                    if let error = kernelError(nlh) {
                        failure = FirewallError(kernel: error, doing: "nftables request \(type)")
                    }
                    done = true
                    return false
                default:
                    do throws(FirewallError) { try body(nlh) } catch { failure = error; done = true; return false }
                    return true
                }
            }
        }
        if let failure { throw failure }
        if interrupted { throw FirewallError(kind: .interrupted, message: "the ruleset changed while it was being read") }
    }

    // MARK: - Helpers

    /// Calls `body` for each netlink message in the first `count` bytes of the receive buffer,
    /// until it returns false.
    private func forEachMessage(_ count: Int, _ body: (UnsafePointer<nlmsghdr>) -> Bool) {
        var remaining = Int32(count)
        var nlh = UnsafePointer(receiveBuffer.baseAddress!.assumingMemoryBound(to: nlmsghdr.self))
        while mnl_nlmsg_ok(nlh, remaining) {
            guard body(nlh) else { return }
            nlh = UnsafePointer(mnl_nlmsg_next(nlh, &remaining))
        }
    }

    private func kernelError(_ nlh: UnsafePointer<nlmsghdr>) -> NftKernelError? {
        let code = vpnsup_nft_nlmsgerr_errno(nlh)
        guard code != 0 else { return nil }
        let missing = Int(vpnsup_nft_extack_missing_type(nlh))
        return NftKernelError(sequence: nlh.pointee.nlmsg_seq, errno: code < 0 ? EPROTO : code,
                              message: vpnsup_nft_extack_message(nlh).map { String(cString: $0) },
                              missingAttribute: missing >= 0 ? missing : nil)
    }

    /// Drops replies left over from an earlier request that was abandoned by a thrown error.
    private func discardPending() {
        while recv(fd, receiveBuffer.baseAddress, receiveBuffer.count, Int32(MSG_DONTWAIT)) >= 0 || errno == EINTR || errno == ENOBUFS {}
    }

    private func socketBufferSize(_ option: Int32) -> Int {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, option, &value, &length) == 0 ? Int(value) : 0
    }

    /// Raises a socket buffer to at least `size` bytes. The FORCE variants (CAP_NET_ADMIN) pass
    /// the rmem/wmem_max limits; without the capability fall back to the plain option.
    private func ensureBuffer(_ force: Int32, fallback: Int32, size: Int, current: inout Int) {
        // The kernel doubles what it is given and reports the doubled value.
        guard size > current / 2 else { return }
        var value = Int32(clamping: size)
        if setsockopt(fd, SOL_SOCKET, force, &value, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, fallback, &value, socklen_t(MemoryLayout<Int32>.size))
        }
        current = socketBufferSize(fallback)
    }
}
