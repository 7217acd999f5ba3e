import Glibc
import Synchronization

/// The unix socket `vpnsup status` talks to: each connection receives one snapshot (JSON) and is closed.
public final class StatusChannel: Sendable {
    private let listener: Int32
    private let path: String
    private let wakeup: WakeupEvent
    private let stopped = Mutex(false)

    private init(listener: Int32, path: String, wakeup: WakeupEvent) {
        self.listener = listener
        self.path = path
        self.wakeup = wakeup
    }

    /// Listens at `path` (replacing a stale socket) and answers every connection with `snapshot()`
    /// on a dedicated thread. Root only, or root and `group` (mode 0660) when one is given.
    public static func listen(at path: String, group: UInt32? = nil,
                              snapshot: @escaping @Sendable () -> [UInt8]) throws -> StatusChannel {
        let fd = try UnixSocket.listening(at: path, mode: group == nil ? 0o600 : 0o660)
        if let group, chown(path, 0, group) != 0 {
            let code = errno
            Glibc.close(fd)
            throw UnixSocketError(operation: "chown \(path)", code: code)
        }
        let wakeup: WakeupEvent
        do { wakeup = try WakeupEvent() } catch { Glibc.close(fd); throw error }
        let channel = StatusChannel(listener: fd, path: path, wakeup: wakeup)
        try ReaderThread.start(name: "vpnsup-status") { [channel] in channel.serve(snapshot) }
        return channel
    }

    /// Stops answering and removes the socket.
    public func close() {
        let first = stopped.withLock { stopped in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        unlink(path)
        wakeup.signal()
    }

    private func serve(_ snapshot: @Sendable () -> [UInt8]) {
        defer { Glibc.close(listener) }
        var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wakeup.descriptor, events: Int16(POLLIN), revents: 0)]
        while true {
            if poll(&fds, 2, -1) < 0 {
                if errno == EINTR { continue }
                return
            }
            if fds[1].revents != 0 { return }
            let client = Glibc.accept(listener, nil, nil)
            guard client >= 0 else { continue }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            UnixSocket.writeAll(client, snapshot())
            Glibc.close(client)
        }
    }

    /// Connects to the status socket at `path` and returns what it sends.
    public static func fetch(from path: String) throws -> [UInt8] {
        let fd = try UnixSocket.connected(to: path)
        defer { Glibc.close(fd) }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 {
                if errno == EINTR { continue }
                throw UnixSocketError(operation: "read \(path)", code: errno)
            }
            if count == 0 { return result }
            result += buffer[0..<count]
        }
    }
}

public struct UnixSocketError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var code: Int32
    public var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// Small helpers over AF_UNIX stream sockets.
enum UnixSocket {
    static func listening(at path: String, mode: mode_t) throws -> Int32 {
        var address = try socketAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw UnixSocketError(operation: "socket", code: errno) }
        unlink(path)
        // vpnsup runs with umask 077 (`FileCreation.restrict()`), so the
        // socket is never briefly accessible to others before the chmod.
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        let bindErrno = errno
        guard bound == 0 else {
            close(fd)
            throw UnixSocketError(operation: "bind \(path)", code: bindErrno)
        }
        guard chmod(path, mode) == 0, Glibc.listen(fd, 16) == 0 else {
            let code = errno
            close(fd)
            throw UnixSocketError(operation: "listen \(path)", code: code)
        }
        return fd
    }

    static func connected(to path: String) throws -> Int32 {
        var address = try socketAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw UnixSocketError(operation: "socket", code: errno) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            close(fd)
            throw UnixSocketError(operation: "connect \(path)", code: code)
        }
        return fd
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += written
        }
    }

    static func socketAddress(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else {
            throw UnixSocketError(operation: "socket path \(path) is longer than \(capacity - 1) bytes", code: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }
}
