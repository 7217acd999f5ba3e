import CMnl
import Glibc

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
    private let descriptor: Int32

    public init(interface: String, directory: String = "/var/run/wireguard") throws {
        self.directory = directory
        socketName = "\(interface).sock"
        if mkdir(directory, 0o755) != 0, errno != EEXIST {
            throw ReaderThreadError(call: "mkdir \(directory)", errno: errno)
        }
        let descriptor = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard descriptor >= 0 else { throw ReaderThreadError(call: "inotify_init1", errno: errno) }
        // IN_MOVED_TO too: a socket bound elsewhere and renamed into place appears that way.
        guard inotify_add_watch(descriptor, directory, UInt32(IN_CREATE | IN_MOVED_TO)) >= 0 else {
            let code = errno
            close(descriptor)
            throw ReaderThreadError(call: "inotify_add_watch \(directory)", errno: code)
        }
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    public var socketPath: String { "\(directory)/\(socketName)" }

    /// Whether a socket of that name exists now.
    public var socketExists: Bool {
        var info = stat()
        return lstat(socketPath, &info) == 0 && info.st_mode & S_IFMT == S_IFSOCK
    }

    /// Blocks until the socket exists (at once if it does already), `deadline` passes, or `wakeup`
    /// is signalled. A stale socket must have been removed before (`WireGuardGo.claimSocket`):
    /// an existing file counts as the socket.
    public func wait(until deadline: ContinuousClock.Instant, wakeup: WakeupEvent? = nil) throws -> Outcome {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            // After the watch is armed, so a creation between the two is seen either way.
            if socketExists { return .appeared }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { return .timedOut }
            let (seconds, attoseconds) = remaining.components
            let milliseconds = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1)
            var descriptors = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)]
            if let wakeup { descriptors.append(pollfd(fd: wakeup.descriptor, events: Int16(POLLIN), revents: 0)) }
            let ready = poll(&descriptors, nfds_t(descriptors.count), milliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                throw ReaderThreadError(call: "poll", errno: errno)
            }
            if descriptors.count > 1, descriptors[1].revents != 0 {
                wakeup?.drain()
                return .woken
            }
            guard descriptors[0].revents != 0 else { continue }
            // Drain the queued events; whatever they name, the existence check above decides
            // (an overflow, IN_Q_OVERFLOW, loses names but not the file).
            while true {
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count < 0 {
                    if errno == EINTR { continue }
                    if errno == EAGAIN { break }
                    throw ReaderThreadError(call: "read inotify", errno: errno)
                }
                if Self.names(in: buffer[..<count]).contains(where: { $0.name == socketName && $0.ignored == false }) {
                    return .appeared
                }
                if Self.names(in: buffer[..<count]).contains(where: \.ignored) {
                    // The directory itself went away: nothing will appear in it.
                    throw ReaderThreadError(call: "watch \(directory)", errno: ENOENT)
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
