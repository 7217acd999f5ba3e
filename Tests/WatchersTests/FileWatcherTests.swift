import Foundation
import Glibc
import Testing
import SystemSupport
@testable import Watchers

/// The PORT_FWD_FILE watcher against the ways a file really changes: written in place, replaced
/// by a rename, swapped under a Kubernetes ConfigMap's `..data` link, deleted; and the changes
/// it must not report (another file of the directory, the same contents again).
@Suite struct FileWatcherTests {
    /// The next reading, or nil when none comes within `timeout` or the stream ended. (A timeout
    /// cancels the waiting read, which ends the stream: only a failing test meets one.)
    private func next(_ stream: AsyncStream<FileWatcher.Reading>, timeout: Duration = .seconds(5)) async -> FileWatcher.Reading? {
        await withTaskGroup(of: FileWatcher.Reading?.self) { group in
            group.addTask {
                var iterator = stream.makeAsyncIterator()
                return await iterator.next()
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    private func withDirectory(_ body: (String) async throws -> Void) async throws {
        let directory = TestSystem.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await body(directory)
    }

    private func replace(_ path: String, with text: String) throws {
        let temporary = path + ".new"
        TestSystem.writeFile(temporary, text)
        guard rename(temporary, path) == 0 else { throw POSIXError(.init(rawValue: errno)!) }
    }

    @Test func reportsWritesInPlaceAndRenamesButNotOtherFilesOrSameContents() async throws {
        try await withDirectory { directory in
            let path = directory + "/forwards"
            TestSystem.writeFile(path, "8080:172.22.0.10:80\n")
            let watcher = try FileWatcher(path: path)
            defer { watcher.stop() }
            #expect(watcher.initial == .contents("8080:172.22.0.10:80\n"))
            let changes = watcher.changes

            TestSystem.writeFile(path, "8081:172.22.0.10:81\n")
            #expect(await next(changes) == .contents("8081:172.22.0.10:81\n"))

            // Another file, and the same contents written again: nothing to report. The rename
            // after them is then the very next reading.
            TestSystem.writeFile(directory + "/unrelated", "x")
            TestSystem.writeFile(path, "8081:172.22.0.10:81\n")
            try replace(path, with: "# renamed over\n")
            let renamed = await next(changes)
            #expect(renamed == .contents("# renamed over\n"), "\(String(describing: renamed))")

            unlink(path)
            guard case .unreadable(let why)? = await next(changes) else {
                Issue.record("a deleted file is reported unreadable")
                return
            }
            #expect(why.contains("No such file"), "\(why)")

            TestSystem.writeFile(path, "back\n")
            #expect(await next(changes) == .contents("back\n"))
        }
    }

    /// As the kubelet updates a ConfigMap volume: the file is a link through `..data`, which is a
    /// link to a timestamped directory; an update writes a new directory and renames a new
    /// `..data_tmp` link over `..data`. Only the directory sees an event.
    @Test func reportsAConfigMapSwap() async throws {
        try await withDirectory { directory in
            let manager = FileManager.default
            try manager.createDirectory(atPath: directory + "/..2026_12_06_first", withIntermediateDirectories: false)
            TestSystem.writeFile(directory + "/..2026_12_06_first/forwards", "first\n")
            try manager.createSymbolicLink(atPath: directory + "/..data", withDestinationPath: "..2026_12_06_first")
            try manager.createSymbolicLink(atPath: directory + "/forwards", withDestinationPath: "..data/forwards")

            let watcher = try FileWatcher(path: directory + "/forwards")
            defer { watcher.stop() }
            #expect(watcher.initial == .contents("first\n"))
            let changes = watcher.changes

            try manager.createDirectory(atPath: directory + "/..2026_12_06_second", withIntermediateDirectories: false)
            TestSystem.writeFile(directory + "/..2026_12_06_second/forwards", "second\n")
            try manager.createSymbolicLink(atPath: directory + "/..data_tmp", withDestinationPath: "..2026_12_06_second")
            #expect(rename(directory + "/..data_tmp", directory + "/..data") == 0)
            #expect(await next(changes) == .contents("second\n"))
        }
    }

    @Test func stopEndsTheStream() async throws {
        try await withDirectory { directory in
            let watcher = try FileWatcher(path: directory + "/absent")
            #expect(watcher.initial == .unreadable("open: \(String(cString: strerror(ENOENT)))"))
            let changes = watcher.changes
            watcher.stop()
            #expect(await next(changes) == nil)
        }
    }

    /// SIGHUP's reading: reported even when nothing changed, made by the watcher's thread in order
    /// with the changes.
    @Test func rereadReportsTheSameContentsAgainInOrder() async throws {
        try await withDirectory { directory in
            let path = directory + "/forwards"
            TestSystem.writeFile(path, "8080:172.22.0.10:80\n")
            let watcher = try FileWatcher(path: path)
            defer { watcher.stop() }
            let changes = watcher.changes
            watcher.reread()
            #expect(await next(changes) == .contents("8080:172.22.0.10:80\n"))
            try replace(path, with: "8081:172.22.0.10:81\n")
            #expect(await next(changes) == .contents("8081:172.22.0.10:81\n"))
            watcher.reread()
            #expect(await next(changes) == .contents("8081:172.22.0.10:81\n"))
            // A change and a reread the watcher sees together make one reading, which answers both.
            try replace(path, with: "8082:172.22.0.10:82\n")
            watcher.reread()
            #expect(await next(changes) == .contents("8082:172.22.0.10:82\n"))
        }
    }

    /// With a report closure the readings go to it, in order, and `changes` stays empty.
    @Test func aReportClosureTakesTheReadingsInstead() async throws {
        try await withDirectory { directory in
            let path = directory + "/forwards"
            TestSystem.writeFile(path, "first\n")
            let (reported, continuation) = AsyncStream.makeStream(of: FileWatcher.Reading.self)
            let watcher = try FileWatcher(path: path) { continuation.yield($0) }
            #expect(watcher.initial == .contents("first\n"))
            try replace(path, with: "second\n")
            #expect(await next(reported) == .contents("second\n"))
            watcher.reread()
            #expect(await next(reported) == .contents("second\n"))
            let changes = watcher.changes
            watcher.stop()
            #expect(await next(changes) == nil)
        }
    }

    /// What the path names is never waited on: a FIFO without a writer (a blocking open(2) would
    /// wait for one for ever, and this test with it), a directory, a device.
    @Test func aFIFOADirectoryOrADeviceIsUnreadableAtOnce() async throws {
        try await withDirectory { directory in
            let fifo = directory + "/forwards"
            #expect(mkfifo(fifo, 0o600) == 0)
            #expect(FileWatcher.read(fifo) == .unreadable("not a regular file but a FIFO"))
            #expect(FileWatcher.read(directory) == .unreadable("not a regular file but a directory"))
            #expect(FileWatcher.read("/dev/zero") == .unreadable("not a regular file but a character device"))
            // A watcher on the FIFO starts, and stops, without a writer ever coming.
            let watcher = try FileWatcher(path: fifo)
            #expect(watcher.initial == .unreadable("not a regular file but a FIFO"))
            watcher.stop()
        }
    }

    @Test func aDirectoryThatCannotBeWatchedIsAnError() {
        let error = #expect(throws: SystemError.self) { try FileWatcher(path: "/nonexistent-vpnsup-directory/forwards") }
        #expect(error?.errno == ENOENT)
        #expect(error?.operation == "inotify_add_watch /nonexistent-vpnsup-directory")
    }

    @Test func largeAndNonTextFilesAreUnreadable() async throws {
        try await withDirectory { directory in
            let invalid = directory + "/invalid"
            let fd = open(invalid, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            var bytes: [UInt8] = [0xff, 0xfe, 0x0a]
            _ = write(fd, &bytes, bytes.count)
            close(fd)
            #expect(FileWatcher.read(invalid) == .unreadable("decode as UTF-8: \(String(cString: strerror(EILSEQ)))"))
            let large = directory + "/large"
            let padding = String(repeating: "# padding line\n", count: FileWatcher.maximumSize / 15 + 1)
            TestSystem.writeFile(large, padding)
            #expect(FileWatcher.read(large) == .unreadable("over 8 MiB (\(padding.utf8.count) bytes)"))
            // What would block a reader (a FIFO without a writer) is refused, never waited on.
            let fifo = directory + "/fifo"
            #expect(mkfifo(fifo, 0o600) == 0)
            #expect(FileWatcher.read(fifo) == .unreadable("not a regular file but a FIFO"))
        }
    }
}
