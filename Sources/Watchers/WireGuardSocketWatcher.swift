import CNetlink
import Glibc
import SystemSupport

/// Tells when wireguard-go's UAPI socket `/var/run/wireguard/NAME.sock` appears, from the kernel
/// (inotify IN_CREATE on the directory), not by looking again and again. wireguard-go creates
/// the TUN link first and the socket after it, so once the socket exists the link does too.
///
/// Arm it (create it) before spawning wireguard-go, so a socket made at once is not missed; then
/// `wait` on a thread that may block (one waiter at a time: the events are read, not shared).
/// `wakeup` ends the wait early (the child exited, shutdown).
public final class WireGuardSocketWatcher: Sendable {
    public enum Outcome: Hashable, Sendable {
        case appeared
        case timedOut
        case woken
    }

    public let directory: String
    public let socketName: String
    private let inotify: OwnedDescriptor

    public init(interface: String, directory: String = "/var/run/wireguard") throws(SystemError) {
        self.directory = directory
        socketName = "\(interface).sock"
        do {
            try retryingInterrupts("mkdir \(directory)") { mkdir(directory, 0o755) }
        } catch where error.errno == EEXIST {}
        let inotify = OwnedDescriptor(try retryingInterrupts("inotify_init1") { inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK)) })
        // IN_MOVED_TO too: a socket bound elsewhere and renamed into place appears that way.
        try retryingInterrupts("inotify_add_watch \(directory)") {
            inotify_add_watch(inotify.rawValue, directory, UInt32(IN_CREATE | IN_MOVED_TO))
        }
        self.inotify = inotify
    }

    public var socketPath: String { "\(directory)/\(socketName)" }

    /// Whether a socket of that name exists now.
    public var socketExists: Bool {
        var info = stat()
        return lstat(socketPath, &info) == 0 && info.st_mode & S_IFMT == S_IFSOCK
    }

    /// Blocks until the socket exists (at once if it does already), `deadline` passes, or `wakeup`
    /// is signalled. A stale socket must have been removed before (`WireGuardGo.claimSocket`):
    /// an existing file counts as the socket.
    public func wait(until deadline: ContinuousClock.Instant, wakeup: WakeupEvent? = nil) throws(SystemError) -> Outcome {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            // After the watch is armed, so a creation between the two is seen either way.
            if socketExists { return .appeared }
            let timeout = pollTimeout(until: deadline)
            guard timeout > 0 else { return .timedOut }
            var descriptors = [pollfd(fd: inotify.rawValue, events: Int16(POLLIN), revents: 0)]
            if let wakeup { descriptors.append(pollfd(fd: wakeup.descriptor, events: Int16(POLLIN), revents: 0)) }
            try retryingInterrupts("poll") { poll(&descriptors, nfds_t(descriptors.count), timeout) }
            if descriptors.count > 1, descriptors[1].revents != 0 {
                wakeup?.drain()
                return .woken
            }
            guard descriptors[0].revents != 0 else { continue }
            // Drain the queued events; whatever they name, the existence check above decides
            // (an overflow, IN_Q_OVERFLOW, loses names but not the file).
            while true {
                let count: Int
                do {
                    count = try retryingInterrupts("read inotify") {
                        buffer.withUnsafeMutableBytes { read(inotify.rawValue, $0.baseAddress, $0.count) }
                    }
                } catch where error.errno == EAGAIN {
                    break
                }
                let names = Self.names(in: buffer[..<count])
                if names.contains(where: { $0.name == socketName && $0.ignored == false }) { return .appeared }
                if names.contains(where: \.ignored) {
                    // The directory itself went away: nothing will appear in it.
                    throw SystemError(operation: "watch \(directory)", errno: ENOENT)
                }
                if count == 0 { break }
            }
        }
    }

    /// The names in a buffer of inotify events (struct inotify_event: wd, mask, cookie, len, then
    /// `len` bytes of NUL-padded name), and whether the event was IN_IGNORED (the watch ended).
    static func names(in bytes: ArraySlice<UInt8>) -> [(name: String, ignored: Bool)] {
        let base = bytes.startIndex
        var offset = 0
        var result: [(String, Bool)] = []
        while offset + 16 <= bytes.count {
            // Host byte order, as the kernel writes it.
            func u32(_ at: Int) -> UInt32 {
                bytes[(base + at)..<(base + at + 4)].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            }
            let mask = u32(offset + 4), length = Int(u32(offset + 12))
            guard length <= bytes.count - offset - 16 else { break }
            let nameBytes = bytes[(base + offset + 16)..<(base + offset + 16 + length)].prefix { $0 != 0 }
            result.append((String(decoding: nameBytes, as: UTF8.self), mask & UInt32(IN_IGNORED) != 0))
            offset += 16 + length
        }
        return result
    }
}
