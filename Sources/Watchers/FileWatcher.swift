import Glibc
import Synchronization
import SystemSupport

/// Watches one file (PORT_FWD_FILE) and reports its contents whenever they change, told by the
/// kernel (inotify), never by polling.
///
/// It watches the file's directory, not the file: a file replaced by a rename (editors, `mv`,
/// configuration management) is a new inode a watch on the old one never hears of, and a
/// Kubernetes ConfigMap volume changes its files by swapping the `..data` symbolic link the file
/// points through, an event in the directory only. A creation, close after writing, rename,
/// deletion or attribute change of the file's name, or of the first name its symbolic link goes
/// through (`..data`), makes the watcher read the file again (following links); other files of
/// the directory are ignored. It reports only when what it reads differs from what it reported
/// last, so a burst of events, or the same contents written again, reports nothing. While the
/// file is being written in place (modified and not yet closed) it is not read: a half-written
/// file would be a different, wrong set of forwards; nor is a regular file just created, until
/// its writer closes it. (A truncation when a writer opens the file
/// raises no event, so a writer that truncates and then stalls before writing can still be read
/// empty: replace the file by a rename, which is atomic, as editors and Kubernetes do.)
///
/// `reread()` asks for a reading now (SIGHUP), reported even when it is the same as the last;
/// because the watcher's thread makes it, every reading is reported in the order it was made.
/// Reading never blocks on what the path names: a FIFO, a device or a directory is unreadable,
/// not waited on, and so is a file over `maximumSize`.
public final class FileWatcher: Sendable {
    /// What reading the file gave.
    public enum Reading: Sendable, Hashable {
        case contents(String)
        /// The file is missing, unreadable, not UTF-8 or too large; why.
        case unreadable(String)
    }

    /// Files larger than this are reported unreadable (10,000 forwards take about 300 KB).
    public static let maximumSize = 8 * 1024 * 1024

    public let path: String
    /// The reading when the watcher started; `changes` reports only later ones that differ.
    public let initial: Reading
    /// Each new reading, in order. Ends when the watcher stops or the directory goes away (with
    /// an `.unreadable` reading first, in that case). Empty when the readings go to `report`.
    public let changes: AsyncStream<Reading>

    private let wakeup: WakeupEvent
    private let requests = Requests()
    private let thread = Mutex<ReaderThread?>(nil)

    /// What the watcher's thread is asked for besides the kernel's events.
    final class Requests: Sendable {
        struct Pending { var stop = false, reread = false }
        let pending = Mutex(Pending())
        /// Takes the pending requests.
        func take() -> Pending { pending.withLock { taken in defer { taken.reread = false }; return taken } }
    }

    /// Starts watching `path` (absolute). Throws if its directory cannot be watched. With
    /// `report`, each new reading is passed to it on the watcher's thread, in order, instead of to
    /// `changes`: work on a reading (parsing 10,000 lines) then stays off Swift's cooperative pool.
    public init(path: String, report: (@Sendable (Reading) -> Void)? = nil) throws(FileWatcherError) {
        self.path = path
        let directory = ConfigurationFile.directory(of: path)
        let name = String(path[path.index(after: path.lastIndex(of: "/")!)...])
        let inotify: OwnedDescriptor
        do {
            inotify = OwnedDescriptor(try retryingInterrupts("inotify_init1") { inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK)) })
            let mask = UInt32(IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB
                | IN_DELETE_SELF | IN_MOVE_SELF)
            try retryingInterrupts("inotify_add_watch \(directory)") { inotify_add_watch(inotify.rawValue, directory, mask) }
            wakeup = try WakeupEvent()
        } catch {
            throw error
        }
        // Read after the watch exists: a change between the two is then both read and reported
        // (and, reading the same, reported no further).
        initial = FileWatcher.read(path)
        let (stream, continuation) = AsyncStream.makeStream(of: Reading.self, bufferingPolicy: .unbounded)
        changes = stream
        let deliver: @Sendable (Reading) -> Void = report ?? { continuation.yield($0) }
        let wakeup = self.wakeup, requests = self.requests, start = initial
        do {
            let reader = try ReaderThread.start(name: "vpnsup-file") {
                FileWatcher.watch(descriptor: inotify.rawValue, path: path, name: name, last: start,
                                  wakeup: wakeup, requests: requests, deliver: deliver)
                continuation.finish()
            }
            thread.withLock { $0 = reader }
        } catch {
            continuation.finish()
            throw error
        }
    }

    /// Stops the watcher and waits for its thread; `changes` then ends.
    public func stop() {
        requests.pending.withLock { $0.stop = true }
        wakeup.signal()
        thread.withLock { $0 }?.join()
    }

    /// Asks for a reading now (SIGHUP), reported in `changes` even when it is the same as the last.
    /// While the file is being written in place it comes with the writer's close.
    public func reread() {
        requests.pending.withLock { $0.reread = true }
        wakeup.signal()
    }

    deinit {
        requests.pending.withLock { $0.stop = true }
        wakeup.signal()
    }

    static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFREG
    }

    /// The first name a symbolic link at `path` goes through, when its target is relative and
    /// starts in the same directory (`..data/forwards` gives `..data`).
    static func linkStep(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink(path, &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        let target = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard !target.hasPrefix("/"), let first = target.split(separator: "/").first, first != ".." else { return nil }
        return String(first)
    }

    /// The file's contents now, following symbolic links, read by the one configuration loader:
    /// a FIFO or a device in its place is unreadable, never waited on.
    public static func read(_ path: String) -> Reading {
        switch ConfigurationFile.read(path, limit: maximumSize) {
        case .success(let contents): .contents(contents.text)
        case .failure(let error): .unreadable(error.description)
        }
    }

    /// The watcher thread: waits for inotify events or the stop signal; after each batch of
    /// events, reads the file once and reports a reading that differs from the last.
    private static func watch(descriptor: Int32, path: String, name: String, last start: Reading,
                              wakeup: WakeupEvent, requests: Requests, deliver: (Reading) -> Void) {
        var last = start
        var buffer = [UInt8](receiving: 64 * 1024)
        // Modified (a truncation or a write) and not yet closed after writing.
        var beingWritten = false
        // `reread()` asked for a reading that has not been made yet.
        var rereadPending = false
        while true {
            var fds = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: wakeup.descriptor, events: Int16(POLLIN), revents: 0)]
            do {
                try retryingInterrupts("poll") { poll(&fds, 2, -1) }
            } catch {
                deliver(.unreadable(error.description))
                return
            }
            if fds[1].revents != 0 {
                wakeup.drain()
                let pending = requests.take()
                if pending.stop { return }
                if pending.reread { rereadPending = true }
            }
            var directoryGone = false
            var relevant = false
            // The file's name, and the name in this directory its link goes through, if any.
            let names = [name] + (FileWatcher.linkStep(path).map { [$0] } ?? [])
            // Drain every queued event: which name each concerns, whether the directory itself
            // went, whether events were lost (IN_Q_OVERFLOW: any of them may have been the file's).
            while true {
                // EAGAIN: drained.
                guard let count = try? retryingInterrupts("read inotify", {
                    buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
                }), count > 0 else { break }
                var offset = 0
                while offset + MemoryLayout<inotify_event>.size <= count {
                    let (mask, length) = buffer.withUnsafeBytes { raw in
                        let event = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                        return (event.mask, Int(event.len))
                    }
                    // The name follows the event, padded with NULs to `length`.
                    let start = offset + MemoryLayout<inotify_event>.size
                    let named = buffer[start..<min(start + length, count)].prefix { $0 != 0 }
                    if named.elementsEqual(name.utf8) {
                        if mask & UInt32(IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO) != 0 { beingWritten = false }
                        // Created empty by a writer (a regular file: a link would never be closed
                        // after writing), or modified: its contents come with the close.
                        if mask & UInt32(IN_MODIFY) != 0 || (mask & UInt32(IN_CREATE) != 0 && isRegularFile(path)) {
                            beingWritten = true
                        }
                    }
                    if names.contains(where: { named.elementsEqual($0.utf8) }) { relevant = true }
                    if mask & UInt32(IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED) != 0 { directoryGone = true }
                    if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                        relevant = true
                        beingWritten = false
                    }
                    offset += MemoryLayout<inotify_event>.size + length
                }
            }
            if !directoryGone && (beingWritten || !(relevant || rereadPending)) { continue }
            let reading = read(path)
            // A write that began while this was reading (its events are queued by now): the
            // reading may be half of it; the events bring another.
            var pending = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            if !directoryGone && poll(&pending, 1, 0) > 0 { continue }
            if reading != last || rereadPending {
                last = reading
                rereadPending = false
                deliver(reading)
            }
            if directoryGone {
                if case .contents = reading { deliver(.unreadable("the directory of \(name) was removed or moved")) }
                return
            }
        }
    }
}

/// The file watcher could not start: the system call that failed, which names the directory.
public typealias FileWatcherError = SystemError
