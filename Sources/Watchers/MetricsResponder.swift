import Glibc
import StateMachine
import Synchronization

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
    private let unixPath: String?
    private let wakeup: WakeupEvent
    private let thread: Mutex<ReaderThread?> = Mutex(nil)
    private let stopped = Mutex(false)

    private init(httpPort: UInt16?, unixPath: String?, wakeup: WakeupEvent) {
        self.httpPort = httpPort
        self.unixPath = unixPath
        self.wakeup = wakeup
    }

    /// Listens at `unixPath` (replacing a stale socket; mode 0600, or 0660 root:`group`) and, when
    /// `http` is given, on that TCP address, and answers on a new thread. `exposition` runs on that
    /// thread, once per request; nil means there is nothing to show yet (503, or an empty answer
    /// on the unix socket). The TCP socket is bound with IP_FREEBIND: the address need not be on
    /// an interface yet (vpnsup adds IP_ADDR to the LAN interface after start-up, and again
    /// whenever it is removed).
    public static func start(unixPath: String?, group: UInt32? = nil, http: MetricsListen?, limits: Limits = Limits(),
                             exposition: @escaping @Sendable () -> [UInt8]?) throws -> MetricsResponder {
        var listeners: [(fd: Int32, kind: Connection.Kind)] = []
        func closeAll() { listeners.forEach { Glibc.close($0.fd) } }
        var port: UInt16?
        do {
            if let http {
                let (fd, bound) = try tcpListener(http)
                listeners.append((fd, .http))
                port = bound
            }
            if let unixPath {
                let fd = try UnixSocket.listening(at: unixPath, mode: group == nil ? 0o600 : 0o660)
                listeners.append((fd, .unix))
                if let group, chown(unixPath, 0, group) != 0 {
                    throw UnixSocketError(operation: "chown \(unixPath)", code: errno)
                }
                guard fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0 else {
                    throw UnixSocketError(operation: "fcntl \(unixPath)", code: errno)
                }
            }
        } catch {
            closeAll()
            if let unixPath { unlink(unixPath) }
            throw error
        }
        let wakeup: WakeupEvent
        do { wakeup = try WakeupEvent() } catch { closeAll(); throw error }
        let responder = MetricsResponder(httpPort: port, unixPath: unixPath, wakeup: wakeup)
        let server = Server(listeners: listeners, wakeup: wakeup, limits: limits, exposition: exposition)
        do {
            let started = try ReaderThread.start(name: "vpnsup-metrics") { server.run() }
            responder.thread.withLock { $0 = started }
        } catch {
            closeAll()
            throw error
        }
        return responder
    }

    /// Stops answering, closes every connection and removes the unix socket; returns once the
    /// thread has ended.
    public func close() {
        let first = stopped.withLock { stopped in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        if let unixPath { unlink(unixPath) }
        wakeup.signal()
        thread.withLock { $0 }?.join()
    }

    static func tcpListener(_ listen: MetricsListen) throws -> (Int32, UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw MetricsResponderError(operation: "socket", code: errno) }
        var one: Int32 = 1
        // SO_REUSEADDR: a restarted vpnsup binds again while the last one's connections linger in TIME_WAIT.
        guard setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) == 0,
              setsockopt(fd, Int32(IPPROTO_IP), IP_FREEBIND, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw MetricsResponderError(operation: "setsockopt", code: code)
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = listen.port.bigEndian
        address.sin_addr.s_addr = listen.address.value.bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 16) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw MetricsResponderError(operation: bound == 0 ? "listen on \(listen)" : "bind \(listen)", code: code)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (fd, UInt16(bigEndian: address.sin_port))
    }

    /// Reads everything a unix socket at `path` sends until it closes, for at most `within` and
    /// `limit` bytes: how `vpnsup metrics` asks, and how the exposition reads the status.
    public static func fetch(from path: String, within: Duration, limit: Int = 4 << 20) throws -> [UInt8] {
        let deadline = ContinuousClock.now + within
        let fd = try UnixSocket.connected(to: path)
        defer { Glibc.close(fd) }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Server.milliseconds(until: deadline))
            if ready < 0 {
                if errno == EINTR { continue }
                throw UnixSocketError(operation: "poll \(path)", code: errno)
            }
            guard ready > 0 else { throw UnixSocketError(operation: "read \(path)", code: ETIMEDOUT) }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw UnixSocketError(operation: "read \(path)", code: errno)
            }
            if count == 0 { return result }
            result += buffer[0..<count]
            guard result.count <= limit else { throw UnixSocketError(operation: "read \(path)", code: EFBIG) }
        }
    }
}

/// The TCP listener could not be set up (unix socket failures are `UnixSocketError`s).
public struct MetricsResponderError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var code: Int32
    public var description: String { "\(operation): \(String(cString: strerror(code)))" }
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
    let listeners: [(fd: Int32, kind: Connection.Kind)]
    let wakeup: WakeupEvent
    let limits: MetricsResponder.Limits
    let exposition: @Sendable () -> [UInt8]?
    var connections: [Connection] = []
    /// After accept(2) failed for want of a descriptor or memory, the listeners are left alone until
    /// then: still readable, they would otherwise wake poll(2) again at once, for ever.
    var acceptPausedUntil: ContinuousClock.Instant?

    init(listeners: [(fd: Int32, kind: Connection.Kind)], wakeup: WakeupEvent, limits: MetricsResponder.Limits,
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
            listeners.forEach { Glibc.close($0.fd) }
        }
        while true {
            if let until = acceptPausedUntil, ContinuousClock.now >= until { acceptPausedUntil = nil }
            var fds = [pollfd(fd: wakeup.descriptor, events: Int16(POLLIN), revents: 0)]
            // A negative descriptor is skipped by poll(2).
            fds += listeners.map { pollfd(fd: acceptPausedUntil == nil ? $0.fd : -1, events: Int16(POLLIN), revents: 0) }
            fds += connections.map { pollfd(fd: $0.fd, events: Int16($0.response == nil ? POLLIN : POLLOUT), revents: 0) }
            // Sleep until something happens or the nearest deadline passes.
            let timeout = (connections.map(\.deadline) + [acceptPausedUntil].compactMap { $0 }).min()
                .map { Self.milliseconds(until: $0) } ?? -1
            if poll(&fds, nfds_t(fds.count), timeout) < 0 {
                if errno == EINTR { continue }
                return
            }
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
            let fd = Glibc.accept(listener, nil, nil)
            if fd < 0 {
                switch errno {
                case EINTR, ECONNABORTED: continue
                case EAGAIN, EWOULDBLOCK: return // no more waiting
                default:
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection waits in the backlog meanwhile.
                    acceptPausedUntil = ContinuousClock.now + .milliseconds(100)
                    return
                }
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
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
            let count = buffer.withUnsafeMutableBytes { recv(connection.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count < 0 { return errno == EAGAIN || errno == EINTR }
            if count == 0 { return false } // the client gave up before asking
            connection.received += buffer[0..<count]
            let head = MetricsHTTP.head(connection.received, limit: limits.requestBytes)
            guard head != .incomplete else { return true }
            connection.response = MetricsHTTP.response(to: head, exposition: exposition)
            return true
        }
        guard let response = connection.response, connection.sent < response.count else { return false }
        let written = response[connection.sent...].withUnsafeBytes {
            send(connection.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
        }
        if written < 0 { return errno == EAGAIN || errno == EINTR }
        connection.sent += written
        return connection.sent < response.count
    }

    /// Closes a connection that is done: after the whole response, the write side first, so the
    /// client reads to the end rather than a reset.
    private func finish(_ connection: Connection) {
        if let response = connection.response, connection.sent == response.count {
            shutdown(connection.fd, Int32(SHUT_WR))
        }
        Glibc.close(connection.fd)
    }

    /// poll(2)'s timeout for `deadline`: whole milliseconds, rounded up, never negative.
    static func milliseconds(until deadline: ContinuousClock.Instant) -> Int32 {
        let left = ContinuousClock.now.duration(to: deadline)
        guard left > .zero else { return 0 }
        let (seconds, attoseconds) = left.components
        return Int32(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
    }
}
