import Glibc
import StateMachine

/// Why a UAPI exchange failed.
public struct WireGuardUAPIError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Reason: Hashable, Sendable {
        /// A system call failed (connect: ENOENT when no device serves the name, ECONNREFUSED for a
        /// stale socket file; ETIMEDOUT when the deadline passed).
        case system(call: String, errno: Int32)
        /// The socket is served by another process than the wireguard-go vpnsup started: the
        /// name is in use by another router on this machine (another network namespace).
        case foreignDevice(pid: Int32)
        /// The device answered, and refused or garbled the answer.
        case answer(WireGuardUAPIAnswerError)
        /// The answer was longer than any device of a router's size sends.
        case answerTooLong
    }

    public var interface: String
    public var reason: Reason

    public var description: String {
        switch reason {
        case .system(let call, let code): "UAPI \(interface): \(call): \(String(cString: strerror(code)))"
        case .foreignDevice(let pid): "UAPI \(interface): the socket is served by pid \(pid), not by the wireguard-go vpnsup started"
        case .answer(let error): "UAPI \(interface): \(error)"
        case .answerTooLong: "UAPI \(interface): answer longer than \(WireGuardUAPIClient.answerLimit) bytes"
        }
    }
}

/// Speaks WireGuard's configuration protocol on `/var/run/wireguard/NAME.sock` (wireguard-go's
/// UAPI socket): one connection per request, blocking, bounded by a deadline. Run it off the
/// driver's actor (a reader thread or a detached task that may block).
///
/// The private key travels only on this socket: never in an argument, the environment or a file.
public struct WireGuardUAPIClient: Sendable {
    public static let socketDirectory = "/var/run/wireguard"
    /// Far more than a few peers' answer (each is about 400 bytes).
    public static let answerLimit = 1 << 20

    public var interface: String
    /// The pid of the wireguard-go vpnsup started: the socket must be served by it (SO_PEERCRED),
    /// so a request (with the private key) never reaches another router's device of the same
    /// name. nil: no check (tools and tests).
    public var expectedPID: Int32?
    public var timeout: Duration

    public init(interface: String, expectedPID: Int32? = nil, timeout: Duration = .seconds(2)) {
        self.interface = interface
        self.expectedPID = expectedPID
        self.timeout = timeout
    }

    public static func socketPath(for interface: String) -> String { "\(socketDirectory)/\(interface).sock" }

    public var socketPath: String { Self.socketPath(for: interface) }

    /// Sends `request` and returns the device's answer (an empty status for a `set`).
    public func send(_ request: WireGuardUAPIRequest) throws(WireGuardUAPIError) -> WireGuardDeviceStatus {
        let deadline = ContinuousClock.now + timeout
        let socket = try connect(until: deadline)
        defer { close(socket) }
        try write(request.bytes, to: socket, until: deadline)
        let answer = try readAnswer(from: socket, until: deadline)
        switch WireGuardDeviceStatus.parse(answer) {
        case .success(let status): return status
        case .failure(let error): throw failure(.answer(error))
        }
    }

    /// `get=1`: the device and its peers.
    public func status() throws(WireGuardUAPIError) -> WireGuardDeviceStatus { try send(.get) }

    private func failure(_ reason: WireGuardUAPIError.Reason) -> WireGuardUAPIError {
        WireGuardUAPIError(interface: interface, reason: reason)
    }

    private func systemFailure(_ call: String, _ code: Int32 = errno) -> WireGuardUAPIError {
        failure(.system(call: call, errno: code))
    }

    /// wireguard-go binds its socket, then listens: the file appears (and the socket watcher
    /// reports it) a few microseconds before connections are accepted. ECONNREFUSED is retried
    /// within that window only (1 ms apart, at most 20 times) — longer, the file is stale.
    private func connect(until deadline: ContinuousClock.Instant) throws(WireGuardUAPIError) -> Int32 {
        var refusals = 0
        while true {
            do {
                return try UnixSocket.connect(path: socketPath, expectedPID: expectedPID)
            } catch {
                switch error {
                case .system(let call, let code):
                    guard code == ECONNREFUSED, refusals < 20, ContinuousClock.now < deadline else { throw systemFailure(call, code) }
                    refusals += 1
                    usleep(1000)
                case .foreignPeer(let pid):
                    throw failure(.foreignDevice(pid: pid))
                }
            }
        }
    }

    private func write(_ bytes: [UInt8], to socket: Int32, until deadline: ContinuousClock.Instant) throws(WireGuardUAPIError) {
        var offset = 0
        while offset < bytes.count {
            try wait(socket, for: Int16(POLLOUT), until: deadline)
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw systemFailure("send")
            }
            offset += sent
        }
    }

    /// Until the blank line that ends every answer (`errno=N\n\n`), or the device closes.
    private func readAnswer(from socket: Int32, until deadline: ContinuousClock.Instant) throws(WireGuardUAPIError) -> [UInt8] {
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !(answer.count >= 2 && answer[answer.count - 2] == 0x0a && answer[answer.count - 1] == 0x0a) {
            try wait(socket, for: Int16(POLLIN), until: deadline)
            let count = buffer.withUnsafeMutableBytes { Glibc.recv(socket, $0.baseAddress, $0.count, 0) }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw systemFailure("recv")
            }
            if count == 0 { break }
            answer += buffer[..<count]
            guard answer.count <= Self.answerLimit else { throw failure(.answerTooLong) }
        }
        return answer
    }

    private func wait(_ socket: Int32, for events: Int16, until deadline: ContinuousClock.Instant) throws(WireGuardUAPIError) {
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { throw systemFailure("wait for the device", ETIMEDOUT) }
            let (seconds, attoseconds) = remaining.components
            let milliseconds = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1)
            var descriptor = pollfd(fd: socket, events: events, revents: 0)
            let ready = poll(&descriptor, 1, milliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                throw systemFailure("poll")
            }
            if ready > 0 { return }
        }
    }
}

/// A non-blocking, close-on-exec AF_UNIX stream connection, and who serves it.
enum UnixSocket {
    enum ConnectError: Error {
        case system(call: String, errno: Int32)
        case foreignPeer(pid: Int32)
    }

    /// The kernel's struct ucred (glibc declares it only under _GNU_SOURCE).
    private struct PeerCredentials {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
    }

    /// Connects to `path`; with `expectedPID`, refuses (and closes) a socket another process serves.
    static func connect(path: String, expectedPID: Int32?) throws(ConnectError) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < capacity, !pathBytes.contains(0) else { throw .system(call: "socket path", errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        // SOCK_STREAM is 1, SOCK_CLOEXEC and SOCK_NONBLOCK are O_CLOEXEC and O_NONBLOCK on Linux; glibc's
        // SOCK_* names come and go with the importer's batching (see NftablesMonitor.swift): a release
        // build lost them here once WireGuardRouting.swift joined the module.
        let socket = Glibc.socket(AF_UNIX, 1 | O_CLOEXEC | O_NONBLOCK, 0)
        guard socket >= 0 else { throw .system(call: "socket", errno: errno) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(socket, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        // A non-blocking connect to a listening unix socket completes at once (EAGAIN: backlog full).
        guard connected == 0 else {
            let code = errno
            close(socket)
            throw .system(call: "connect \(path)", errno: code)
        }
        if let expectedPID {
            guard let server = peerPID(socket) else {
                let code = errno
                close(socket)
                throw .system(call: "getsockopt SO_PEERCRED", errno: code)
            }
            guard server == expectedPID else {
                close(socket)
                throw .foreignPeer(pid: server)
            }
        }
        return socket
    }

    /// The pid of the process that serves a connected unix socket (as of its listen()).
    static func peerPID(_ socket: Int32) -> Int32? {
        var credentials = PeerCredentials()
        var length = socklen_t(MemoryLayout<PeerCredentials>.size)
        guard getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0,
              length == socklen_t(MemoryLayout<PeerCredentials>.size) else { return nil }
        return credentials.pid
    }
}
