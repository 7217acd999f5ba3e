import Glibc
import StateMachine

/// Why a channel over a unix socket (management, status, metrics, WireGuard's UAPI) failed.
public enum ChannelError: Error, Sendable, Hashable, CustomStringConvertible {
    case pathTooLong(String)
    /// Something other than a socket is in the way; it is left alone.
    case notASocket(String)
    /// `send` without a connection.
    case notConnected
    /// A command holding CR, LF or NUL, which would make OpenVPN read several commands.
    case invalidCommand
    case system(SystemError)
    /// The process serving `path` is not root's: not vpnsup's (anyone who could replace the socket
    /// could serve a forged status).
    case untrustedServer(path: String, peer: PeerCredentials)
    /// No complete answer from `path` before the deadline.
    case timedOut(path: String, after: Duration)

    public var description: String {
        switch self {
        case .pathTooLong(let path): "socket path is too long (\(UnixSocket.maximumPathLength) bytes at most): \(escapedForDisplay(path))"
        case .notASocket(let path): "\(escapedForDisplay(path)) exists and is not a socket"
        case .notConnected: "OpenVPN is not connected to the management socket"
        case .invalidCommand: "management command contains CR, LF or NUL"
        case .system(let error): error.description
        case .untrustedServer(let path, let peer):
            "\(escapedForDisplay(path)) is served by uid \(peer.uid) (pid \(peer.pid)), not root: not vpnsup's socket"
        case .timedOut(let path, let after): "no answer from \(escapedForDisplay(path)) within \(after)"
        }
    }
}

/// Who is at the other end of a unix socket, as the kernel recorded it (SO_PEERCRED): the
/// process that connected (for a server), or the one that listened (for a client).
public struct PeerCredentials: Sendable, Hashable, CustomStringConvertible {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public var description: String { "pid \(pid), uid \(uid), gid \(gid)" }

    init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }
}

/// AF_UNIX stream sockets: what the management, status and metrics channels and the WireGuard
/// UAPI client share.
public enum UnixSocket {
    public static let maximumPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    public static func address(_ path: String) throws(ChannelError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= maximumPathLength, !bytes.contains(0) else {
            throw .pathTooLong(path)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    /// A new stream socket, close-on-exec, optionally non-blocking.
    public static func make(nonBlocking: Bool = false) throws(ChannelError) -> OwnedDescriptor {
        let flags = SocketFlags.stream | SocketFlags.closeOnExec | (nonBlocking ? SocketFlags.nonBlocking : 0)
        let fd = socket(AF_UNIX, flags, 0)
        guard fd >= 0 else { throw .system(SystemError("socket")) }
        return OwnedDescriptor(fd)
    }

    /// A listening socket at `path` with `mode`. A socket file left there by an earlier run is
    /// replaced; anything else (a regular file, a directory, a link) is refused and left alone.
    /// Returns the socket and the file's identity, so that only this socket's file is removed later.
    public static func listen(at path: String, mode: mode_t, backlog: Int32) throws(ChannelError)
        -> (socket: OwnedDescriptor, identity: FileIdentity) {
        var address = try address(path)
        try removeStaleSocket(path)
        let socket = try make()
        // Linux creates the socket file with the socket inode's mode (less the umask): setting it
        // before bind leaves no moment where the file is open to others.
        guard fchmod(socket.rawValue, mode) == 0 else { throw .system(SystemError("fchmod")) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else { throw .system(SystemError("bind \(escapedForDisplay(path))")) }
        var info = stat()
        guard chmod(path, mode) == 0, lstat(path, &info) == 0 else {
            let error = SystemError("chmod \(escapedForDisplay(path))")
            unlink(path)
            throw .system(error)
        }
        guard Glibc.listen(socket.rawValue, backlog) == 0 else {
            let error = SystemError("listen \(escapedForDisplay(path))")
            unlink(path)
            throw .system(error)
        }
        return (socket, FileIdentity(info))
    }

    /// The next connection on `listener`, close-on-exec (accept4 is not in Swift's Glibc module;
    /// the spawner closes inherited descriptors anyway, so setting it just after leaves no leak).
    /// A connection that went away before it was accepted is skipped.
    public static func accept(on listener: Int32) throws(SystemError) -> Int32 {
        while true {
            do {
                let fd = try retryingInterrupts("accept") { Glibc.accept(listener, nil, nil) }
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                return fd
            } catch where error.errno == ECONNABORTED {
                continue
            }
        }
    }

    /// Unlinks a socket left by an earlier run; refuses to delete anything else.
    private static func removeStaleSocket(_ path: String) throws(ChannelError) {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw .system(SystemError("lstat \(escapedForDisplay(path))"))
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket(path) }
        guard unlink(path) == 0 || errno == ENOENT else { throw .system(SystemError("unlink \(escapedForDisplay(path))")) }
    }

    /// Removes the socket file at `path` if it is still the one `identity` names (a successor's
    /// socket there is left alone).
    public static func remove(_ path: String, ifStill identity: FileIdentity) {
        var info = stat()
        if lstat(path, &info) == 0, FileIdentity(info) == identity { unlink(path) }
    }

    /// A connection to `path`, or an error; waits at most `timeout` for a server whose backlog
    /// is full (a blocking connect honours the send timeout). A non-blocking socket is connected
    /// at once or not at all (a unix socket's connect does not wait in progress).
    public static func connect(to path: String, timeout: Duration,
                               nonBlocking: Bool = false) throws(ChannelError) -> OwnedDescriptor {
        let deadline = ContinuousClock.now + timeout
        var address = try address(path)
        let socket = try make(nonBlocking: nonBlocking)
        setTimeout(socket.rawValue, SO_SNDTIMEO, until: deadline)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(socket.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            // EAGAIN: the backlog is full (a blocking connect waited for room until the timeout).
            if errno == EAGAIN, !nonBlocking { throw .timedOut(path: path, after: timeout) }
            throw .system(SystemError("connect \(escapedForDisplay(path))"))
        }
        return socket
    }

    /// Connects to `path` and returns what the server sends until it closes, within `timeout` in
    /// all and at most `limit` bytes. The server must run as `serverUID`: a socket anyone else
    /// serves is refused before a byte is read, so a forged answer cannot pass for vpnsup's.
    public static func fetch(from path: String, timeout: Duration, serverUID: UInt32,
                      limit: Int = 16 << 20) throws(ChannelError) -> [UInt8] {
        let deadline = ContinuousClock.now + timeout
        let socket = try connect(to: path, timeout: timeout)
        let peer: PeerCredentials
        do { peer = try Self.peer(of: socket.rawValue) } catch { throw .system(error) }
        guard peer.uid == serverUID else { throw .untrustedServer(path: path, peer: peer) }
        var result: [UInt8] = []
        var buffer = [UInt8](receiving: 16384)
        while true {
            let readiness: Readiness
            do { readiness = try awaitReadiness(socket.rawValue, for: Int16(POLLIN), until: deadline) } catch { throw .system(error) }
            guard readiness == .ready else { throw .timedOut(path: path, after: timeout) }
            let count: Int
            do throws(SystemError) {
                count = try retryingInterrupts("read \(escapedForDisplay(path))") {
                    buffer.withUnsafeMutableBytes { recv(socket.rawValue, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                }
            } catch where error.errno == EAGAIN {
                continue
            } catch {
                throw .system(error)
            }
            if count == 0 { return result }
            result += buffer[0..<count]
            guard result.count <= limit else { throw .system(SystemError(operation: "read \(escapedForDisplay(path))", errno: EFBIG)) }
        }
    }

    /// SO_PEERCRED of a connected socket.
    public static func peer(of fd: Int32) throws(SystemError) -> PeerCredentials {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (hidden from Swift without _GNU_SOURCE).
        var fields = [UInt32](repeating: 0, count: 3)
        var length = socklen_t(12)
        let result = fields.withUnsafeMutableBytes { getsockopt(fd, SOL_SOCKET, SO_PEERCRED, $0.baseAddress, &length) }
        guard result == 0, length == 12 else { throw SystemError("getsockopt SO_PEERCRED") }
        return PeerCredentials(pid: Int32(bitPattern: fields[0]), uid: fields[1], gid: fields[2])
    }

    /// Writes all of `bytes` to a blocking socket (a send timeout bounds each wait for room).
    public static func writeAll(_ bytes: [UInt8], to fd: Int32) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            // MSG_NOSIGNAL: a closed peer is an error to report, not a SIGPIPE.
            offset += try retryingInterrupts("send") {
                bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, SocketFlags.noSignal) }
            }
        }
    }

    /// Sends what it can of `bytes` from `offset` without waiting, and advances `offset`.
    public static func send(_ bytes: [UInt8], from offset: inout Int, on fd: Int32) -> SendProgress {
        while offset < bytes.count {
            do {
                offset += try retryingInterrupts("send") {
                    // MSG_NOSIGNAL: a closed peer is an error to report, not a SIGPIPE.
                    bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, SocketFlags.noSignal | Int32(MSG_DONTWAIT)) }
                }
            } catch where error.errno == EAGAIN || error.errno == EWOULDBLOCK {
                return .wouldBlock
            } catch {
                return .failed(error)
            }
        }
        return .done
    }

    public enum SendProgress { case done, wouldBlock, failed(SystemError) }

    /// Sets SO_SNDTIMEO or SO_RCVTIMEO to the time left until `deadline` (at least 1 ms: 0
    /// would mean no timeout at all).
    public static func setTimeout(_ fd: Int32, _ option: Int32, until deadline: ContinuousClock.Instant) {
        let milliseconds = max(1, Int(pollTimeout(until: deadline)))
        var timeout = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        _ = setsockopt(fd, SOL_SOCKET, option, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }
}

/// A file's device and inode: which file a path named when it was looked at.
public struct FileIdentity: Hashable, Sendable {
    public var device: UInt64
    public var inode: UInt64

    public init(_ info: stat) {
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }
}
