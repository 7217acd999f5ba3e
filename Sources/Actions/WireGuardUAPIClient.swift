import Glibc
import StateMachine
import SystemSupport

/// Why a UAPI exchange failed.
public struct WireGuardUAPIError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Reason: Hashable, Sendable {
        /// A system call failed (connect: ENOENT when no device serves the name, ECONNREFUSED for a
        /// stale socket file; ETIMEDOUT when the deadline passed).
        case system(SystemError)
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
        case .system(let error): "UAPI \(interface): \(error)"
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
        try write(request.bytes, to: socket.rawValue, until: deadline)
        let answer = try readAnswer(from: socket.rawValue, until: deadline)
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

    private func systemFailure(_ error: SystemError) -> WireGuardUAPIError {
        failure(.system(error))
    }

    /// wireguard-go binds its socket, then listens: the file appears (and the socket watcher
    /// reports it) a few microseconds before connections are accepted. ECONNREFUSED is retried
    /// within that window only (1 ms apart, at most 20 times) — longer, the file is stale. With
    /// `expectedPID`, a socket another process serves is refused (and closed) unanswered.
    private func connect(until deadline: ContinuousClock.Instant) throws(WireGuardUAPIError) -> OwnedDescriptor {
        var refusals = 0
        while true {
            let socket: OwnedDescriptor
            do {
                socket = try UnixSocket.connect(to: socketPath, timeout: timeout, nonBlocking: true)
            } catch {
                guard case .system(let cause) = error else {
                    throw systemFailure(SystemError(operation: "connect \(socketPath)", errno: ENAMETOOLONG))
                }
                guard cause.errno == ECONNREFUSED, refusals < 20, ContinuousClock.now < deadline else { throw systemFailure(cause) }
                refusals += 1
                usleep(1000)
                continue
            }
            if let expectedPID {
                let server: PeerCredentials
                do { server = try UnixSocket.peer(of: socket.rawValue) } catch { throw systemFailure(error) }
                guard server.pid == expectedPID else { throw failure(.foreignDevice(pid: server.pid)) }
            }
            return socket
        }
    }

    private func write(_ bytes: [UInt8], to socket: Int32, until deadline: ContinuousClock.Instant) throws(WireGuardUAPIError) {
        var offset = 0
        while offset < bytes.count {
            try wait(socket, for: Int16(POLLOUT), until: deadline)
            switch UnixSocket.send(bytes, from: &offset, on: socket) {
            case .done, .wouldBlock: continue
            case .failed(let error): throw systemFailure(error)
            }
        }
    }

    /// Until the blank line that ends every answer (`errno=N\n\n`), or the device closes.
    private func readAnswer(from socket: Int32, until deadline: ContinuousClock.Instant) throws(WireGuardUAPIError) -> [UInt8] {
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !(answer.count >= 2 && answer[answer.count - 2] == 0x0a && answer[answer.count - 1] == 0x0a) {
            try wait(socket, for: Int16(POLLIN), until: deadline)
            let count: Int
            do {
                count = try retryingInterrupts("recv") { buffer.withUnsafeMutableBytes { Glibc.recv(socket, $0.baseAddress, $0.count, 0) } }
            } catch where error.errno == EAGAIN {
                continue
            } catch {
                throw systemFailure(error)
            }
            if count == 0 { break }
            answer += buffer[..<count]
            guard answer.count <= Self.answerLimit else { throw failure(.answerTooLong) }
        }
        return answer
    }

    private func wait(_ socket: Int32, for events: Int16, until deadline: ContinuousClock.Instant) throws(WireGuardUAPIError) {
        let readiness: Readiness
        do { readiness = try awaitReadiness(socket, for: events, until: deadline) } catch { throw systemFailure(error) }
        guard readiness == .ready else { throw systemFailure(SystemError(operation: "wait for the device", errno: ETIMEDOUT)) }
    }
}
