import Glibc
import Synchronization

public enum ManagementChannelEvent: Sendable, Hashable {
    /// OpenVPN connected; messages follow.
    case connected
    case message(ManagementMessage)
    /// The connection closed (OpenVPN exited, or `close()`); another may follow.
    case disconnected
}

public enum ManagementChannelError: Error, Sendable, Hashable, CustomStringConvertible {
    case pathTooLong(String)
    /// Something other than a socket is in the way; it is left alone.
    case notASocket(String)
    /// `send` without a connection.
    case notConnected
    /// A command holding CR, LF or NUL, which would make OpenVPN read several commands.
    case invalidCommand
    case system(call: String, errno: Int32)

    public var description: String {
        switch self {
        case .pathTooLong(let path): "management socket path is too long: \(path)"
        case .notASocket(let path): "\(path) exists and is not a socket"
        case .notConnected: "OpenVPN is not connected to the management socket"
        case .invalidCommand: "management command contains CR, LF or NUL"
        case .system(let call, let code): "\(call): \(String(cString: strerror(code)))"
        }
    }
}

/// The management socket vpnsup listens on and OpenVPN connects to (`--management <path> unix
/// --management-client`): OpenVPN finds the socket ready when it starts, and exits when this
/// connection goes away.
///
/// A dedicated thread blocks in accept(2) and read(2), serving one connection at a time, and
/// delivers what it reads on `events`. `close()` wakes it with shutdown(2) rather than closing
/// descriptors under it (another thread could be handed the same number).
public final class ManagementChannel: Sendable {
    /// Unbounded: dropping a `>PASSWORD:` or `>STATE:` would be worse than the memory OpenVPN's
    /// few lines take while the consumer is busy.
    public let events: AsyncStream<ManagementChannelEvent>
    private let shared: Shared
    private let path: String
    /// The socket file we created, so `close()` removes ours and not a successor's.
    private let identity: (device: UInt64, inode: UInt64)

    /// Creates the listening socket at `path`, mode 0600 (a stale socket there is replaced), and
    /// starts the thread that accepts OpenVPN. The directory should be root's and mode 0700.
    /// `initialCommands` (e.g. `state on all`) are written by that thread as soon as a connection
    /// is accepted, before `.connected` is delivered.
    public static func listen(at path: String, initialCommands: [String] = []) throws -> ManagementChannel {
        guard initialCommands.allSatisfy(isSafeCommand) else { throw ManagementChannelError.invalidCommand }
        var address = try socketAddress(path)
        try removeStaleSocket(path)

        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ManagementChannelError.system(call: "socket", errno: errno) }
        func fail(_ call: String) -> ManagementChannelError {
            let error = ManagementChannelError.system(call: call, errno: errno)
            Glibc.close(fd)
            return error
        }
        // Linux creates the socket file with the socket inode's mode (less the umask): setting it
        // before bind leaves no moment where the file is open to others.
        guard fchmod(fd, 0o600) == 0 else { throw fail("fchmod") }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else { throw fail("bind \(path)") }
        var info = stat()
        guard chmod(path, 0o600) == 0, lstat(path, &info) == 0 else {
            let error = fail("chmod \(path)")
            unlink(path)
            throw error
        }
        // One pending connection: OpenVPN is the only client, and one at a time.
        guard Glibc.listen(fd, 1) == 0 else {
            let error = fail("listen \(path)")
            unlink(path)
            throw error
        }

        let (stream, continuation) = AsyncStream.makeStream(of: ManagementChannelEvent.self,
                                                            bufferingPolicy: .unbounded)
        let shared = Shared(listener: fd, continuation: continuation)
        do {
            try ReaderThread.start(name: "vpnsup-mgmt") { [shared] in shared.serve(initialCommands) }
        } catch {
            unlink(path)
            Glibc.close(fd)
            continuation.finish()
            throw error
        }
        // Only now: the channel's deinit stops the thread, so it must not exist without one.
        return ManagementChannel(events: stream, shared: shared, path: path,
                                 identity: (UInt64(info.st_dev), UInt64(info.st_ino)))
    }

    private init(events: AsyncStream<ManagementChannelEvent>, shared: Shared, path: String,
                 identity: (device: UInt64, inode: UInt64)) {
        self.events = events
        self.shared = shared
        self.path = path
        self.identity = identity
    }

    /// Writes `command` and a line feed to the current connection. Blocks only while the kernel's
    /// socket buffer is full (bounded by a send timeout); OpenVPN reads commands promptly.
    public func send(_ command: String) throws {
        guard Self.isSafeCommand(command) else { throw ManagementChannelError.invalidCommand }
        try shared.send(Array((command + "\n").utf8))
    }

    /// Whether OpenVPN is connected right now.
    public var isConnected: Bool { shared.isConnected }

    /// Stops accepting, drops the connection (OpenVPN then exits), removes the socket file and
    /// finishes `events`. Idempotent.
    public func close() {
        guard shared.stop() else { return }
        var info = stat()
        if lstat(path, &info) == 0, UInt64(info.st_dev) == identity.device, UInt64(info.st_ino) == identity.inode {
            unlink(path)
        }
    }

    deinit { close() }

    static func isSafeCommand(_ command: String) -> Bool {
        !command.utf8.contains { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") || $0 == 0 }
    }

    private static func socketAddress(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else {
            throw ManagementChannelError.pathTooLong(path)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    /// Unlinks a socket left by an earlier run; refuses to delete anything else.
    private static func removeStaleSocket(_ path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw ManagementChannelError.system(call: "lstat \(path)", errno: errno)
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else { throw ManagementChannelError.notASocket(path) }
        guard unlink(path) == 0 || errno == ENOENT else {
            throw ManagementChannelError.system(call: "unlink \(path)", errno: errno)
        }
    }
}

/// What the reader thread and the callers of `send`/`close` share. The reader thread alone closes
/// descriptors; others only shut them down, under the lock, so a number is never reused under them.
private final class Shared: Sendable {
    private struct State {
        var connection: Int32?
        var stopped = false
    }

    private let listener: Int32
    private let continuation: AsyncStream<ManagementChannelEvent>.Continuation
    private let state = Mutex(State())

    init(listener: Int32, continuation: AsyncStream<ManagementChannelEvent>.Continuation) {
        self.listener = listener
        self.continuation = continuation
    }

    var isConnected: Bool { state.withLock { $0.connection != nil } }

    /// Returns false if already stopped.
    func stop() -> Bool {
        state.withLock { state in
            guard !state.stopped else { return false }
            state.stopped = true
            // Wakes accept(2) (EINVAL) and read(2) (end of file) on the reader thread.
            shutdown(listener, Int32(SHUT_RDWR))
            if let connection = state.connection { shutdown(connection, Int32(SHUT_RDWR)) }
            return true
        }
    }

    func send(_ bytes: [UInt8]) throws {
        // Holding the lock keeps the descriptor open (the reader closes it under the same lock)
        // and keeps concurrent commands from interleaving.
        try state.withLock { state in
            guard let fd = state.connection else { throw ManagementChannelError.notConnected }
            try Self.writeAll(fd, bytes)
        }
    }

    /// Runs on the reader thread until `stop()`.
    func serve(_ initialCommands: [String]) {
        defer {
            Glibc.close(listener)
            continuation.finish()
        }
        while true {
            // accept4 is not in Swift's Glibc module; the spawner closes inherited descriptors
            // anyway, so setting close-on-exec just after accept(2) leaves no leak.
            let fd = accept(listener, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                if state.withLock({ $0.stopped }) { return }
                // EMFILE and the like: nothing to do but report and stop; OpenVPN then fails to
                // connect and exits, which the supervisor sees.
                continuation.yield(.message(.malformed("accept: \(String(cString: strerror(errno)))")))
                return
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            // A stuck peer must not hold `send` (and so the caller's actor) for long.
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let accepted = state.withLock { state in
                guard !state.stopped else { return false }
                state.connection = fd
                return true
            }
            guard accepted else {
                Glibc.close(fd)
                return
            }
            for command in initialCommands {
                try? Self.writeAll(fd, Array((command + "\n").utf8))
            }
            continuation.yield(.connected)
            read(fd)
            state.withLock { state in
                state.connection = nil
                Glibc.close(fd)
            }
            continuation.yield(.disconnected)
            if state.withLock({ $0.stopped }) { return }
        }
    }

    /// Reads and delivers messages until end of file or an error.
    private func read(_ fd: Int32) {
        var parser = ManagementParser()
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            for message in parser.feed(buffer[0..<count]) { continuation.yield(.message(message)) }
        }
        for message in parser.finish() { continuation.yield(.message(message)) }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            // MSG_NOSIGNAL: a closed peer is an error to report, not a SIGPIPE.
            let written = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written < 0 {
                if errno == EINTR { continue }
                throw ManagementChannelError.system(call: "send", errno: errno)
            }
            offset += written
        }
    }
}
