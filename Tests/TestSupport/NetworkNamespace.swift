import Foundation
import Glibc

/// Why a thread could not enter a network namespace.
public struct NetworkNamespaceError: Error, CustomStringConvertible {
    public var description: String
}

/// Network namespaces for code running in this process. A network namespace belongs to a thread,
/// not to the process: a dedicated thread can enter one without moving the test process (or any
/// other test) out of its own, and everything that thread opens or spawns lives there.
public enum NetworkNamespace {
    // unshare(2) and setns(2) are not exported by Swift's Glibc module; look them up instead.
    private typealias UnshareCall = @convention(c) (Int32) -> Int32
    private typealias SetnsCall = @convention(c) (Int32, Int32) -> Int32
    private static let cloneNewNet: Int32 = 0x4000_0000

    /// Runs `body` on a new thread that first enters a fresh, empty network namespace (or joins
    /// the one at `path`, e.g. /run/netns/NAME). A fresh namespace disappears with the thread.
    public static func run<T: Sendable>(joining path: String? = nil, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                do {
                    try enter(path)
                    continuation.resume(returning: try body())
                } catch {
                    continuation.resume(throwing: error)
                }
            }
            thread.start()
        }
    }

    private static func enter(_ path: String?) throws {
        guard let handle = dlopen(nil, RTLD_NOW) else { throw NetworkNamespaceError(description: "dlopen failed") }
        if let path {
            guard let symbol = dlsym(handle, "setns") else { throw NetworkNamespaceError(description: "no setns in libc") }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw NetworkNamespaceError(description: "open \(path): errno \(errno)") }
            defer { close(fd) }
            guard unsafeBitCast(symbol, to: SetnsCall.self)(fd, cloneNewNet) == 0 else {
                throw NetworkNamespaceError(description: "setns \(path): errno \(errno)")
            }
        } else {
            guard let symbol = dlsym(handle, "unshare") else { throw NetworkNamespaceError(description: "no unshare in libc") }
            guard unsafeBitCast(symbol, to: UnshareCall.self)(cloneNewNet) == 0 else {
                throw NetworkNamespaceError(description: "unshare(CLONE_NEWNET): errno \(errno)")
            }
        }
    }

    /// The calling thread's network namespace, as /proc names it (`net:[inode]`).
    public static var current: String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self/ns/net")
    }
}
