import CNetlink
import Glibc

/// A netlink socket (rtnetlink or nfnetlink) bound to a port the kernel picks; closed when
/// released. Every netlink user of vpnsup opens, tunes and reads its socket through this type.
/// Not Sendable: one thread uses it at a time.
public final class NetlinkSocket {
    public let descriptor: Int32
    /// The port the kernel bound the socket to (unique in the network namespace while it is open;
    /// the kernel stamps it on every notification a request from this socket causes).
    public let portID: UInt32
    private var sequence = UInt32(truncatingIfNeeded: time(nil))

    /// Opens a socket of `netlinkProtocol` (NETLINK_ROUTE, NETLINK_NETFILTER), subscribed to the
    /// legacy multicast `groups` bit mask (rtnetlink's RTMGRP_*; 0 for none).
    public init(protocol netlinkProtocol: Int32, groups: UInt32 = 0) throws(SystemError) {
        let fd = vpnsup_netlink_socket(netlinkProtocol)  // close-on-exec
        guard fd >= 0 else { throw SystemError("netlink socket") }
        var address = sockaddr_nl()
        address.nl_family = sa_family_t(AF_NETLINK)
        address.nl_groups = groups
        var length = socklen_t(MemoryLayout<sockaddr_nl>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else {
            let error = SystemError("netlink bind")
            close(fd)
            throw error
        }
        descriptor = fd
        portID = address.nl_pid
    }

    deinit { close(descriptor) }

    /// NETLINK_EXT_ACK (the kernel explains a refusal in text) and NETLINK_CAP_ACK (its answer does
    /// not echo the request, which may be a large batch).
    public func requestExtendedAcks() {
        var on: Int32 = 1
        _ = setsockopt(descriptor, SOL_NETLINK, NETLINK_EXT_ACK, &on, socklen_t(MemoryLayout<Int32>.size))
        _ = setsockopt(descriptor, SOL_NETLINK, NETLINK_CAP_ACK, &on, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Bounds every blocking receive: the kernel always answers a request, this only guards
    /// against a bug leaving the caller blocked forever.
    public func setReceiveTimeout(seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        _ = setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Joins multicast group `group` (e.g. NFNLGRP_NFTABLES), one beyond the legacy bit mask.
    public func join(group: UInt32) throws(SystemError) {
        var group = group
        try retryingInterrupts("joining netlink group \(group)") {
            setsockopt(descriptor, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, socklen_t(MemoryLayout<UInt32>.size))
        }
    }

    public enum Buffer { case send, receive }

    /// The kernel's size of a socket buffer (twice what was asked, as it reports it).
    public func bufferSize(_ buffer: Buffer) -> Int {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        let option = buffer == .send ? SO_SNDBUF : SO_RCVBUF
        return getsockopt(descriptor, SOL_SOCKET, option, &value, &length) == 0 ? Int(value) : 0
    }

    /// Raises a socket buffer to `size` bytes. The FORCE options pass the system's limits
    /// (wmem_max, rmem_max) but need CAP_NET_ADMIN; without it, the plain option takes what it may.
    /// Returns the size the kernel reports afterwards.
    @discardableResult
    public func setBufferSize(_ buffer: Buffer, to size: Int) -> Int {
        var value = Int32(clamping: size)
        let length = socklen_t(MemoryLayout<Int32>.size)
        let (force, plain) = buffer == .send ? (SO_SNDBUFFORCE, SO_SNDBUF) : (SO_RCVBUFFORCE, SO_RCVBUF)
        if setsockopt(descriptor, SOL_SOCKET, force, &value, length) != 0 {
            _ = setsockopt(descriptor, SOL_SOCKET, plain, &value, length)
        }
        return bufferSize(buffer)
    }

    /// Sends one datagram to the kernel; all of it, or an error (a batch must arrive whole).
    public func send(_ bytes: UnsafeRawBufferPointer, operation: @autoclosure () -> String) throws(SystemError) {
        var kernel = sockaddr_nl()
        kernel.nl_family = sa_family_t(AF_NETLINK)
        let sent = try retryingInterrupts(operation()) {
            withUnsafePointer(to: &kernel) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(descriptor, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_nl>.size))
                }
            }
        }
        guard sent == bytes.count else { throw SystemError(operation: operation(), errno: EMSGSIZE) }
    }

    public func send(_ bytes: [UInt8], operation: @autoclosure () -> String) throws(SystemError) {
        // withUnsafeBytes does not carry a typed error through.
        let failure: SystemError? = bytes.withUnsafeBytes { raw in
            do throws(SystemError) {
                try send(raw, operation: operation())
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
    }

    /// Receives one datagram into `buffer` and returns its real length (MSG_TRUNC), which is
    /// larger than the buffer when the datagram was cut. With `wait` false, nil when nothing is
    /// queued. ENOBUFS (the kernel dropped messages for this socket) is thrown like any error.
    public func receive(into buffer: inout [UInt8], wait: Bool = true,
                        operation: @autoclosure () -> String) throws(SystemError) -> Int? {
        do {
            return try retryingInterrupts(operation()) {
                buffer.withUnsafeMutableBytes { vpnsup_netlink_receive(descriptor, $0.baseAddress, UInt($0.count), wait ? 1 : 0) }
            }
        } catch where !wait && (error.errno == EAGAIN || error.errno == EWOULDBLOCK) {
            return nil
        }
    }

    /// Reads datagrams until the socket would block, calling `message` with each one and
    /// `overflow` when the kernel dropped messages (ENOBUFS, `truncated` false) or cut one too
    /// long for `buffer` (`truncated` true). Returns true once the socket would block, false as
    /// soon as a callback or the socket says the reader must end.
    public func drain(into buffer: inout [UInt8], message: ([UInt8]) -> Bool,
                      overflow: (_ truncated: Bool) -> Bool) -> Bool {
        while true {
            let count: Int
            do {
                guard let received = try receive(into: &buffer, wait: false, operation: "netlink receive") else { return true }
                count = received
            } catch where error.errno == ENOBUFS {
                guard overflow(false) else { return false }
                continue
            } catch {
                return false
            }
            if count > buffer.count {
                guard overflow(true) else { return false }
            } else if !message(Array(buffer[..<count])) {
                return false
            }
        }
    }

    /// A fresh sequence number for a request.
    public func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    /// Sends `request` (with a fresh sequence number) and reads the kernel's messages until
    /// `answer` finds the one for it in a buffer.
    public func exchange<Answer>(_ request: NetlinkRequest, operation: String,
                                 answer: (_ bytes: [UInt8], _ sequence: UInt32) -> Answer?) throws(SystemError) -> Answer {
        var request = request
        request.sequence = nextSequence()
        try send(request.bytes, operation: operation)
        var buffer = [UInt8](receiving: 16 << 10)
        while true {
            let count: Int?
            do {
                count = try receive(into: &buffer, operation: operation)
            } catch where error.errno == EAGAIN {
                throw SystemError(operation: operation, errno: ETIMEDOUT)  // the receive timeout
            }
            if let count, let found = answer(Array(buffer[..<Swift.min(count, buffer.count)]), request.sequence) {
                return found
            }
        }
    }

    /// Sends `request` (which asks for an ACK) and waits for the kernel's answer; errnos in
    /// `tolerating` count as success (EEXIST for an idempotent add).
    public func transact(_ request: NetlinkRequest, operation: String, tolerating: Set<Int32> = []) throws(SystemError) {
        let ack = try exchange(request, operation: operation) { bytes, sequence in
            NetlinkAck.parse(bytes, sequence: sequence, portID: portID)
        }
        if ack.errno == 0 || tolerating.contains(ack.errno) { return }
        throw SystemError(operation: operation, errno: ack.errno, message: ack.message)
    }
}
