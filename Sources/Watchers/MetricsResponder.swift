import Glibc
import StateMachine
import Synchronization
import SystemSupport

/// Serves the metrics exposition on one thread of its own: to every connection on a unix socket
/// (`vpnsup metrics`), and, when asked, over HTTP/1.1 on a TCP address (`METRICS_LISTEN`).
///
/// A hand-written responder rather than an HTTP stack: it answers one fixed request, and SwiftNIO
/// with an HTTP server on top would add megabytes to an image meant to stay under 30 MB. It is
/// bounded in every dimension a client controls: a connection has `Limits.deadline` from accept to
/// the last byte of the response, a request head at most `Limits.requestBytes`, and at most
/// `Limits.connections` are open at once (a new one replaces the oldest). All sockets are
/// non-blocking and multiplexed with poll(2), so a slow or idle client never holds up another
/// scrape; the only wait is the exposition itself.
public final class MetricsResponder: Sendable {
    public struct Limits: Hashable, Sendable {
        public var connections: Int
        public var deadline: Duration
        public var requestBytes: Int

        public init(connections: Int = 16, deadline: Duration = .seconds(5), requestBytes: Int = 4096) {
            self.connections = max(1, connections)
            self.deadline = deadline
            self.requestBytes = max(64, requestBytes)
        }
    }

    /// The TCP port HTTP is served on (the one bound when 0 was asked), nil without HTTP.
    public let httpPort: UInt16?
    /// The unix socket's path and file: only that file is removed on close.
    private let unixSocket: (path: String, identity: FileIdentity)?
    private let wakeup: WakeupEvent
    private let thread: Mutex<ReaderThread?> = Mutex(nil)
    private let stopped = Mutex(false)

    private init(httpPort: UInt16?, unixSocket: (path: String, identity: FileIdentity)?, wakeup: WakeupEvent) {
        self.httpPort = httpPort
        self.unixSocket = unixSocket
        self.wakeup = wakeup
    }

    /// Listens at `unixPath` (replacing a stale socket; mode 0600, or 0660 root:`group`) and, when
    /// `http` is given, on that TCP address, and answers on a new thread. `exposition` runs on that
    /// thread, once per request; nil means there is nothing to show yet (503, or an empty answer
    /// on the unix socket). The TCP socket is bound with IP_FREEBIND: the address need not be on
    /// an interface yet (vpnsup adds IP_ADDR to the LAN interface after start-up, and again
    /// whenever it is removed).
    public static func start(unixPath: String?, group: UInt32? = nil, http: MetricsListen?, limits: Limits = Limits(),
                             exposition: @escaping @Sendable () -> [UInt8]?) throws(MetricsResponderError) -> MetricsResponder {
        var listeners: [Listener] = []
        var port: UInt16?
        if let http {
            do {
                let (socket, bound) = try tcpListener(http)
                listeners.append(Listener(socket: socket, kind: .http))
                port = bound
            } catch {
                throw .http(error)
            }
        }
        var unixSocket: (path: String, identity: FileIdentity)?
        do throws(ChannelError) {
            if let unixPath {
                let (socket, identity) = try UnixSocket.listen(at: unixPath, mode: group == nil ? 0o600 : 0o660, backlog: 16)
                unixSocket = (unixPath, identity)
                listeners.append(Listener(socket: socket, kind: .unix))
                do throws(SystemError) {
                    if let group {
                        try retryingInterrupts("chown \(escapedForDisplay(unixPath))") { lchown(unixPath, 0, group) }
                    }
                    try retryingInterrupts("fcntl") { fcntl(socket.rawValue, F_SETFL, O_NONBLOCK) }
                } catch {
                    throw .system(error)
                }
            }
            let wakeup: WakeupEvent
            do { wakeup = try WakeupEvent() } catch { throw .system(error) }
            let responder = MetricsResponder(httpPort: port, unixSocket: unixSocket, wakeup: wakeup)
            let server = Server(listeners: listeners, wakeup: wakeup, limits: limits, exposition: exposition)
            do {
                let started = try ReaderThread.start(name: "vpnsup-metrics") { server.run() }
                responder.thread.withLock { $0 = started }
            } catch {
                throw .system(error)
            }
            return responder
        } catch {
            if let unixSocket { UnixSocket.remove(unixSocket.path, ifStill: unixSocket.identity) }
            throw .local(error)
        }
    }

    /// Stops answering, closes every connection and removes the unix socket; returns once the
    /// thread has ended.
    public func close() {
        let first = stopped.withLock { stopped in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        if let unixSocket { UnixSocket.remove(unixSocket.path, ifStill: unixSocket.identity) }
        wakeup.signal()
        thread.withLock { $0 }?.join()
    }

    static func tcpListener(_ listen: MetricsListen) throws(SystemError) -> (OwnedDescriptor, UInt16) {
        let socket = OwnedDescriptor(try retryingInterrupts("socket") {
            Glibc.socket(AF_INET, SocketFlags.stream | SocketFlags.closeOnExec | SocketFlags.nonBlocking, 0)
        })
        let fd = socket.rawValue
        var one: Int32 = 1
        // SO_REUSEADDR: a restarted vpnsup binds again while the last one's connections linger in TIME_WAIT.
        try retryingInterrupts("setsockopt SO_REUSEADDR") { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) }
        try retryingInterrupts("setsockopt IP_FREEBIND") { setsockopt(fd, Int32(IPPROTO_IP), IP_FREEBIND, &one, socklen_t(MemoryLayout<Int32>.size)) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = listen.port.bigEndian
        address.sin_addr.s_addr = listen.address.value.bigEndian
        try retryingInterrupts("bind \(listen)") {
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        try retryingInterrupts("listen on \(listen)") { Glibc.listen(fd, 16) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (socket, UInt16(bigEndian: address.sin_port))
    }

    /// Reads everything a unix socket at `path` sends until it closes, for at most `within` and
    /// `limit` bytes: how `vpnsup metrics` asks. The server must be root's, as for the status.
    public static func fetch(from path: String, within: Duration, limit: Int = 4 << 20) throws(ChannelError) -> [UInt8] {
        try UnixSocket.fetch(from: path, timeout: within, serverUID: 0, limit: limit)
    }
}

/// Why the responder did not start.
public enum MetricsResponderError: Error, Sendable, Hashable, CustomStringConvertible {
    /// METRICS_LISTEN could not be listened on (the address, the port in use...).
    case http(SystemError)
    /// The unix socket could not be set up, or no thread could be had.
    case local(ChannelError)

    public var description: String {
        switch self {
        case .http(let error): error.description
        case .local(let error): error.description
        }
    }
}

/// A listening socket and what it serves.
private struct Listener: Sendable {
    let socket: OwnedDescriptor
    let kind: Connection.Kind
    var fd: Int32 { socket.rawValue }
}

/// One accepted connection: what it has sent, what is left to send it, and until when.
private struct Connection {
    enum Kind { case http, unix }
    let fd: Int32
    let kind: Kind
    let deadline: ContinuousClock.Instant
    var received: [UInt8] = []
    /// nil while the request is being read.
    var response: [UInt8]?
    var sent = 0
}

/// The responder's thread: everything it touches is its own.
private final class Server: @unchecked Sendable {
    let listeners: [Listener]
    let wakeup: WakeupEvent
    let limits: MetricsResponder.Limits
    let exposition: @Sendable () -> [UInt8]?
    var connections: [Connection] = []
    /// After accept(2) failed for want of a descriptor or memory, the listeners are left alone until
    /// then: still readable, they would otherwise wake poll(2) again at once, for ever.
    var acceptPausedUntil: ContinuousClock.Instant?

    init(listeners: [Listener], wakeup: WakeupEvent, limits: MetricsResponder.Limits,
         exposition: @escaping @Sendable () -> [UInt8]?) {
        self.listeners = listeners
        self.wakeup = wakeup
        self.limits = limits
        self.exposition = exposition
    }

    func run() {
        defer {
            connections.forEach { Glibc.close($0.fd) }
            connections = []
        }
        while true {
            if let until = acceptPausedUntil, ContinuousClock.now >= until { acceptPausedUntil = nil }
            var fds = [pollfd(fd: wakeup.descriptor, events: Int16(POLLIN), revents: 0)]
            // A negative descriptor is skipped by poll(2).
            fds += listeners.map { pollfd(fd: acceptPausedUntil == nil ? $0.fd : -1, events: Int16(POLLIN), revents: 0) }
            fds += connections.map { pollfd(fd: $0.fd, events: Int16($0.response == nil ? POLLIN : POLLOUT), revents: 0) }
            // Sleep until something happens or the nearest deadline passes.
            let timeout = (connections.map(\.deadline) + [acceptPausedUntil].compactMap { $0 }).min()
                .map { pollTimeout(until: $0) } ?? -1
            guard (try? retryingInterrupts("poll", { poll(&fds, nfds_t(fds.count), timeout) })) != nil else { return }
            if fds[0].revents != 0 { return }
            // Connections first (their indices match the poll set), then new ones.
            var keep: [Connection] = []
            for (index, connection) in connections.enumerated() {
                var connection = connection
                let events = fds[1 + listeners.count + index].revents
                if events != 0, !advance(&connection, events: events) {
                    finish(connection)
                } else if ContinuousClock.now >= connection.deadline {
                    Glibc.close(connection.fd) // too slow: dropped without an answer
                } else {
                    keep.append(connection)
                }
            }
            connections = keep
            for (index, listener) in listeners.enumerated() where fds[1 + index].revents != 0 {
                accept(from: listener.fd, kind: listener.kind)
            }
        }
    }

    private func accept(from listener: Int32, kind: Connection.Kind) {
        while true {
            let fd: Int32
            do {
                fd = try UnixSocket.accept(on: listener)
            } catch {
                // EAGAIN: no more waiting. EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection waits in
                // the backlog meanwhile.
                if error.errno != EAGAIN && error.errno != EWOULDBLOCK {
                    acceptPausedUntil = ContinuousClock.now + .milliseconds(100)
                }
                return
            }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            if connections.count >= limits.connections {
                Glibc.close(connections.removeFirst().fd)
            }
            var connection = Connection(fd: fd, kind: kind, deadline: ContinuousClock.now + limits.deadline)
            if kind == .unix {
                // No request on the unix socket: connecting is asking.
                connection.response = exposition() ?? []
            }
            connections.append(connection)
        }
    }

    /// Reads or writes what poll reported; false once the connection is done with.
    private func advance(_ connection: inout Connection, events: Int16) -> Bool {
        if connection.response == nil {
            var buffer = [UInt8](repeating: 0, count: 2048)
            let count: Int
            do {
                count = try retryingInterrupts("recv") {
                    buffer.withUnsafeMutableBytes { recv(connection.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                }
            } catch {
                return error.errno == EAGAIN || error.errno == EWOULDBLOCK
            }
            if count == 0 { return false } // the client gave up before asking
            connection.received += buffer[0..<count]
            let head = MetricsHTTP.head(connection.received, limit: limits.requestBytes)
            guard head != .incomplete else { return true }
            connection.response = MetricsHTTP.response(to: head, exposition: exposition)
            return true
        }
        guard let response = connection.response, connection.sent < response.count else { return false }
        switch UnixSocket.send(response, from: &connection.sent, on: connection.fd) {
        case .wouldBlock: return true
        case .done, .failed: return false
        }
    }

    /// Closes a connection that is done: after the whole response, the write side first, so the
    /// client reads to the end rather than a reset.
    private func finish(_ connection: Connection) {
        if let response = connection.response, connection.sent == response.count {
            shutdown(connection.fd, Int32(SHUT_WR))
        }
        Glibc.close(connection.fd)
    }
}
