import Glibc
import Synchronization
import SystemSupport

/// The read end of a pipe that holds a child's stdout and stderr (`Spawner.spawnReadingOutput`).
/// Owns the descriptor: it is closed when the output has been read to its end, or with the object.
public final class ChildOutput: Sendable {
    /// Longer lines are cut here (the rest of the line is dropped), so memory stays bounded
    /// whatever the child prints.
    public static let maximumLineLength = 4096

    private let descriptor: Mutex<Int32>

    init(descriptor: Int32) {
        self.descriptor = Mutex(descriptor)
    }

    /// Reads the output line by line, handing each line (without its LF; invalid UTF-8 repaired)
    /// to `body`, until every writer has closed it (the child and whatever inherited it have
    /// exited). Blocks; call it on a thread of its own, once.
    public func readLines(_ body: (String) -> Void) {
        guard let fd = descriptor.withLock({ fd -> Int32? in fd >= 0 ? fd : nil }) else { return }
        var pending: [UInt8] = []
        var cut = false
        var buffer = [UInt8](receiving: 16384)
        while true {
            guard let count = try? retryingInterrupts("read", { buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) } }),
                  count > 0 else { break }
            var start = 0
            for index in 0..<count where buffer[index] == 0x0A {
                if !cut { pending += buffer[start..<min(index, start + Self.maximumLineLength - pending.count)] }
                body(String(decoding: pending, as: UTF8.self))
                pending.removeAll(keepingCapacity: true)
                cut = false
                start = index + 1
            }
            if start < count, !cut {
                pending += buffer[start..<min(count, start + Self.maximumLineLength - pending.count)]
                cut = pending.count >= Self.maximumLineLength
            }
        }
        if !pending.isEmpty { body(String(decoding: pending, as: UTF8.self)) }
        close()
    }

    /// Closes the read end now (a writer then gets EPIPE).
    public func close() {
        descriptor.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }

    deinit { close() }
}

/// A file only root can read, written whole or not at all: to a temporary name beside it (mode
/// 0600 from its creation), then renamed over the target. A reader never sees it half-written and
/// no other user ever can read it (the directory is RUNTIME_DIR, 0700 or 0710).
public enum PrivateFile {
    public static func write(_ text: String, to path: String) throws {
        let temporary = path + ".new"
        unlink(temporary) // a leftover of an interrupted write
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw SystemError("open \(temporary)") }
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let written: Int
            do {
                written = try retryingInterrupts("write \(temporary)") { bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } }
            } catch {
                Glibc.close(fd)
                unlink(temporary)
                throw error
            }
            bytes = bytes.dropFirst(written)
        }
        let modeSet = fchmod(fd, 0o600) == 0
        let closed = Glibc.close(fd) == 0
        guard modeSet, closed else {
            let failure = SystemError(modeSet ? "close \(temporary)" : "chmod \(temporary)")
            unlink(temporary)
            throw failure
        }
        guard rename(temporary, path) == 0 else {
            let failure = SystemError("rename \(temporary) to \(path)")
            unlink(temporary)
            throw failure
        }
    }

    /// Removes `path` if it exists.
    public static func remove(_ path: String) {
        unlink(path)
    }

    /// The file's permission bits, nil when it does not exist.
    public static func mode(_ path: String) -> UInt32? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return UInt32(info.st_mode) & 0o7777
    }
}
