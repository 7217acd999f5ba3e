import Glibc
import StateMachine
import Synchronization
import SystemSupport

/// A client pod's split DNS forwarder (`vpnsup join`, docs/kubernetes.md): listens on
/// 127.0.0.1:53, UDP and TCP, and relays each query as it is to the upstream `route` picks for it
/// (the cluster resolver or the gateway's overlay address), from a socket carrying `mark` — the
/// only sockets the client kill switch lets ask the cluster resolver, and lets past the redirect
/// of every port-53 query to this forwarder. Answers go back as they came: one upstream socket
/// per query, so the query's own id matches them.
///
/// It owns its sockets; its loops run on threads the caller starts (`threads`), so that this
/// module needs none of its own: one for UDP, one for accepting TCP, one per TCP connection
/// (at most `maximumConnections`).
public final class DNSForwarder: Sendable {
    public typealias ThreadStarter = @Sendable (_ name: String, _ body: @escaping @Sendable () -> Void) -> Bool
    /// Picks the upstream of a query (its raw bytes); nil drops it.
    public typealias Route = @Sendable (_ query: [UInt8]) -> IPv4Address?

    public struct Counts: Hashable, Sendable {
        public var relayed: Int = 0
        /// No upstream answered in time, or the query could not be sent.
        public var unanswered: Int = 0
        /// Not a query the route could place (malformed), or over the limits.
        public var dropped: Int = 0
    }

    public static let maximumPending = 256
    public static let maximumConnections = 16

    private let udp: Int32
    private let tcp: Int32
    /// A pipe's ends: `stop()` writes a byte, which wakes both loops' poll(2).
    private let wakeup: Int32
    private let wakeupWriter: Int32
    private let route: Route
    private let mark: UInt32
    private let timeout: Duration
    private let stopped = Atomic<Bool>(false)
    /// The loops still running: the last to end closes the pipe both poll.
    private let loops = Atomic<Int>(2)
    private let connections = Atomic<Int>(0)
    private let counts = Mutex(Counts())

    private init(udp: Int32, tcp: Int32, wakeup: [Int32], route: @escaping Route, mark: UInt32, timeout: Duration) {
        self.udp = udp
        self.tcp = tcp
        self.wakeup = wakeup[0]
        wakeupWriter = wakeup[1]
        self.route = route
        self.mark = mark
        self.timeout = timeout
    }

    /// Binds `address:port` for UDP and TCP and starts serving; throws when either cannot be bound
    /// or no thread can be had.
    public static func start(address: IPv4Address = IPv4Address(127, 0, 0, 1), port: UInt16 = 53, mark: UInt32,
                             timeout: Duration = .seconds(2), route: @escaping Route,
                             threads: @escaping ThreadStarter) throws(SystemError) -> DNSForwarder {
        let udp = try listening(.datagram, address, port)
        let tcp: Int32
        do { tcp = try listening(.stream, address, port) } catch { close(udp); throw error }
        var wakeup: [Int32] = [-1, -1]
        guard pipe(&wakeup) == 0 else {
            let error = SystemError("pipe")
            close(udp)
            close(tcp)
            throw error
        }
        wakeup.forEach { _ = fcntl($0, F_SETFD, FD_CLOEXEC) }
        let forwarder = DNSForwarder(udp: udp, tcp: tcp, wakeup: wakeup, route: route, mark: mark, timeout: timeout)
        guard threads("vpnsup-dns-udp", { forwarder.serveUDP() }) else {
            forwarder.release()
            throw SystemError(operation: "start the forwarder's thread", errno: EAGAIN)
        }
        guard threads("vpnsup-dns-tcp", { forwarder.serveTCP(threads) }) else {
            // The UDP loop ends and closes what is shared once the TCP loop counts as ended too.
            close(tcp)
            forwarder.stop()
            forwarder.loopEnded()
            throw SystemError(operation: "start the forwarder's thread", errno: EAGAIN)
        }
        return forwarder
    }

    /// Stops serving; the loops close the sockets as they end.
    public func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var byte: UInt8 = 1
        _ = Glibc.write(wakeupWriter, &byte, 1)
    }

    public var statistics: Counts { counts.withLock { $0 } }

    private func count(_ change: (inout Counts) -> Void) { counts.withLock { change(&$0) } }

    private func loopEnded() {
        guard loops.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
        close(wakeup)
        close(wakeupWriter)
    }

    /// Only when no loop ever ran.
    private func release() {
        close(udp)
        close(tcp)
        close(wakeup)
        close(wakeupWriter)
    }

    // MARK: UDP

    private struct Pending {
        var socket: MarkedSocket
        var client: sockaddr_in
        var deadline: ContinuousClock.Instant
    }

    private func serveUDP() {
        defer {
            close(udp)
            loopEnded()
        }
        var pending: [Pending] = []
        var buffer = [UInt8](receiving: 65535)
        while !stopped.load(ordering: .acquiring) {
            let now = ContinuousClock.now
            pending.removeAll { entry in
                guard entry.deadline <= now else { return false }
                count { $0.unanswered += 1 }
                return true
            }
            var descriptors = [pollfd(fd: wakeup, events: Int16(POLLIN), revents: 0),
                               pollfd(fd: udp, events: Int16(POLLIN), revents: 0)]
            descriptors += pending.map { pollfd(fd: $0.socket.descriptor, events: Int16(POLLIN), revents: 0) }
            let earliest = pending.map(\.deadline).min()
            do {
                // The timeout computed again after a signal, so that no deadline is passed late.
                try retryingInterrupts("poll") {
                    poll(&descriptors, nfds_t(descriptors.count), earliest.map { pollTimeout(until: $0) } ?? -1)
                }
            } catch {
                return
            }
            if descriptors[0].revents != 0 { return }
            // Answers first, so that a flood of queries cannot starve them.
            var answered: Set<Int> = []
            for (offset, descriptor) in descriptors.dropFirst(2).enumerated() where descriptor.revents != 0 {
                answered.insert(offset)
                var entry = pending[offset]
                if let answer = try? entry.socket.receiveDatagram(until: ContinuousClock.now) {
                    _ = answer.withUnsafeBytes { bytes in
                        withUnsafePointer(to: &entry.client) {
                            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                                sendto(udp, bytes.baseAddress, bytes.count, SocketFlags.noSignal, $0,
                                       socklen_t(MemoryLayout<sockaddr_in>.size))
                            }
                        }
                    }
                    count { $0.relayed += 1 }
                } else {
                    count { $0.unanswered += 1 }
                }
            }
            pending = pending.enumerated().filter { !answered.contains($0.offset) }.map(\.element)
            if descriptors[1].revents != 0 {
                receiveQueries(into: &pending, buffer: &buffer)
            }
        }
    }

    /// Reads every waiting query and sends each to its upstream.
    private func receiveQueries(into pending: inout [Pending], buffer: inout [UInt8]) {
        while true {
            var client = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            // Until it would block (EAGAIN), or fails: either ends this round.
            guard let received = try? retryingInterrupts("recvfrom", {
                buffer.withUnsafeMutableBytes { bytes in
                    withUnsafeMutablePointer(to: &client) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            recvfrom(udp, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT), $0, &length)
                        }
                    }
                }
            }) else { return }
            let query = Array(buffer[0..<received])
            guard pending.count < Self.maximumPending, let upstream = route(query) else {
                count { $0.dropped += 1 }
                continue
            }
            let deadline = ContinuousClock.now + timeout
            do {
                let socket = try MarkedSocket(.udp, mark: mark)
                try socket.connect(upstream, port: 53, until: deadline)
                try socket.send(query)
                pending.append(Pending(socket: socket, client: client, deadline: deadline))
            } catch {
                count { $0.unanswered += 1 }
            }
        }
    }

    // MARK: TCP

    private func serveTCP(_ threads: @escaping ThreadStarter) {
        defer {
            close(tcp)
            loopEnded()
        }
        while !stopped.load(ordering: .acquiring) {
            var descriptors = [pollfd(fd: wakeup, events: Int16(POLLIN), revents: 0),
                               pollfd(fd: tcp, events: Int16(POLLIN), revents: 0)]
            do { try retryingInterrupts("poll") { poll(&descriptors, 2, -1) } } catch { return }
            if descriptors[0].revents != 0 { return }
            guard let client = try? UnixSocket.accept(on: tcp) else { continue }
            guard connections.add(1, ordering: .relaxed).newValue <= Self.maximumConnections,
                  threads("vpnsup-dns-conn", { [self] in serve(connection: client) }) else {
                connections.subtract(1, ordering: .relaxed)
                count { $0.dropped += 1 }
                close(client)
                continue
            }
        }
    }

    /// Queries of one TCP connection (RFC 1035 4.2.2: each message after its 2-byte length), one
    /// upstream connection each, until the client closes or is silent for `timeout`.
    private func serve(connection client: Int32) {
        defer {
            close(client)
            connections.subtract(1, ordering: .relaxed)
        }
        let (seconds, attoseconds) = timeout.components
        var limit = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        _ = setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        while !stopped.load(ordering: .acquiring) {
            guard let prefix = Self.readAll(client, exactly: 2) else { return }
            guard let query = Self.readAll(client, exactly: Int(prefix[0]) << 8 | Int(prefix[1])) else { return }
            guard let upstream = route(query) else {
                count { $0.dropped += 1 }
                return
            }
            let deadline = ContinuousClock.now + timeout
            do {
                let socket = try MarkedSocket(.tcp, mark: mark)
                try socket.connect(upstream, port: 53, until: deadline)
                try socket.send(prefix + query, until: deadline)
                guard let length = try socket.receive(exactly: 2, until: deadline),
                      let answer = try socket.receive(exactly: Int(length[0]) << 8 | Int(length[1]), until: deadline) else {
                    count { $0.unanswered += 1 }
                    return
                }
                guard (try? UnixSocket.writeAll(length + answer, to: client)) != nil else { return }
                count { $0.relayed += 1 }
            } catch {
                count { $0.unanswered += 1 }
                return
            }
        }
    }

    // MARK: Sockets

    private enum Transport {
        case datagram, stream
        var type: Int32 { self == .datagram ? SocketFlags.datagram : SocketFlags.stream }
        var name: String { self == .datagram ? "udp" : "tcp" }
    }

    private static func listening(_ transport: Transport, _ address: IPv4Address, _ port: UInt16) throws(SystemError) -> Int32 {
        let fd = socket(AF_INET, transport.type | SocketFlags.closeOnExec, 0)
        guard fd >= 0 else { throw SystemError("\(transport.name.uppercased()) socket") }
        if transport == .stream {
            // A restarted sidecar binds again while the last one's connections linger. Not for
            // UDP, where it would let two forwarders share the port.
            var on: Int32 = 1
            _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        }
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_port = port.bigEndian
        local.sin_addr.s_addr = address.value.bigEndian
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, transport == .datagram || listen(fd, 16) == 0 else {
            let error = SystemError("listen on \(address):\(port)/\(transport.name)")
            close(fd)
            throw error
        }
        return fd
    }

    /// Exactly `count` bytes from a blocking socket with a receive timeout; nil on timeout or close.
    private static func readAll(_ fd: Int32, exactly count: Int) -> [UInt8]? {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: max(1, count))
        while bytes.count < count {
            let wanted = count - bytes.count
            guard let got = try? retryingInterrupts("recv", { buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, wanted, 0) } }),
                  got > 0 else { return nil }
            bytes += buffer[0..<got]
        }
        return bytes
    }
}
