import Glibc
import SystemSupport

/// One `vpnsup run` per network namespace. Two supervisors in one namespace would fight over table
/// `inet vpnsup` for ever: each takes the other's commit for an outside change and repairs it
/// (seen: two leftover supervisors of a test, each spending 15 % of a core). The lock is a listening
/// socket in the abstract namespace, which the kernel keeps per network namespace and releases when
/// the process ends, however it ends: no file to go stale, nothing to clean up.
public enum NamespaceLock {
    /// The lock of `vpnsup run` and `vpnsup join`: both keep table inet vpnsup.
    public static let supervisor = "vpnsup/run"

    /// The supervisor already holding `name` in this network namespace.
    public struct Held: Error, Sendable, CustomStringConvertible {
        /// Its process id, when the kernel tells it (SO_PEERCRED of a connection to the lock).
        public var holder: Int32?
        /// Its command (`run`, `join`), read from /proc when it can be.
        public var command: String?
        public var description: String {
            "another vpnsup \(command ?? "run")\(holder.map { " (pid \($0))" } ?? "") supervises this network namespace: "
                + "two would fight over table inet vpnsup"
        }
    }

    /// Takes the lock `name` for the rest of the process (the descriptor is never closed, and is
    /// not inherited by children). Throws `Held` when another process holds it; any other failure
    /// (no socket to be had) is not a reason to refuse to run: returns without the lock.
    public static func acquire(_ name: String) throws(Held) {
        // Not an OwnedDescriptor: the lock's socket stays open for the rest of the process.
        let descriptor = socket(AF_UNIX, SocketFlags.stream | SocketFlags.closeOnExec, 0)
        guard descriptor >= 0 else { return }
        if bind(descriptor, name), listen(descriptor, 8) == 0 { return }
        let bindError = errno
        close(descriptor)
        guard bindError == EADDRINUSE else { return }
        let holder = holderPID(name)
        throw Held(holder: holder, command: holder.flatMap(command(of:)))
    }

    /// The first argument of `pid`'s command line (the vpnsup verb).
    private static func command(of pid: Int32) -> String? {
        guard let file = fopen("/proc/\(pid)/cmdline", "r") else { return nil }
        defer { fclose(file) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = fread(&buffer, 1, buffer.count, file)
        let arguments = buffer.prefix(count).split(separator: 0, omittingEmptySubsequences: false)
        guard arguments.count > 1, let verb = String(validating: arguments[1], as: UTF8.self),
              ["run", "join"].contains(verb) else { return nil }
        return verb
    }

    private static func bind(_ descriptor: Int32, _ name: String) -> Bool {
        withAddress(name) { Glibc.bind(descriptor, $0, $1) == 0 }
    }

    /// Asks the holder's listening socket who it is.
    private static func holderPID(_ name: String) -> Int32? {
        guard let socket = try? UnixSocket.make(),
              withAddress(name, { connect(socket.rawValue, $0, $1) == 0 }) else { return nil }
        return try? UnixSocket.peer(of: socket.rawValue).pid
    }

    /// `name` as an abstract address: a leading NUL, no terminator.
    private static func withAddress<T>(_ name: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8.prefix(MemoryLayout.size(ofValue: address.sun_path) - 1))
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            path[0] = 0
            for (index, byte) in bytes.enumerated() { path[index + 1] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }
}
