import Foundation
import StateMachine
import Testing
@testable import SystemSupport

/// docs/security.md, "Local trust boundaries": the one loader of CONFIG, CREDENTIALS_FILE and
/// resolv.conf reads regular files of bounded size only, and never holds its caller past a deadline.
@Suite struct ConfigurationFileTests {
    private func scratch() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vpnsup-file-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test func readsARegularFileThroughASymlinkWithItsMode() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        // Docker secrets and Kubernetes ConfigMaps are symlinks to the real file.
        let real = directory.appendingPathComponent("..data-credentials")
        try "user\npass\n".write(to: real, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o400], ofItemAtPath: real.path)
        let link = directory.appendingPathComponent("credentials")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: real)

        let contents = try ConfigurationFile.read(link.path).get()
        #expect(contents.text == "user\npass\n")
        #expect(contents.mode == 0o400)
    }

    /// A FIFO without a writer would block a plain open(2) forever; here it is refused at once,
    /// as are a directory and a device, each named.
    @Test func refusesWhatIsNotARegularFile() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fifo = directory.appendingPathComponent("credentials").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let cases = [(fifo, "a FIFO"), (directory.path, "a directory"), ("/dev/null", "a character device")]
        for (path, kind) in cases {
            let error = #expect(throws: ConfigurationFileError.self) { try ConfigurationFile.read(path).get() }
            #expect(error?.reason == .notARegularFile(kind: kind))
            #expect(error?.description == "not a regular file but \(kind)")
            #expect(error?.line(variable: "CREDENTIALS_FILE") == "CREDENTIALS_FILE=\(path) cannot be read: not a regular file but \(kind)")
        }
    }

    @Test func refusesAFileOverTheLimitAndOneThatIsNotUTF8() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let big = directory.appendingPathComponent("client.ovpn")
        try Data(repeating: 0x23, count: ConfigurationFile.sizeLimit + 1).write(to: big)
        let tooBig = #expect(throws: ConfigurationFileError.self) { try ConfigurationFile.read(big.path).get() }
        #expect(tooBig?.description == "over 1 MiB (\(ConfigurationFile.sizeLimit + 1) bytes)")
        #expect(try ConfigurationFile.read(big.path, limit: ConfigurationFile.sizeLimit + 1).get().text.count == ConfigurationFile.sizeLimit + 1)

        let binary = directory.appendingPathComponent("binary")
        try Data([0x72, 0xff, 0xfe, 0x0a]).write(to: binary)
        let notText = #expect(throws: ConfigurationFileError.self) { try ConfigurationFile.read(binary.path).get() }
        #expect(notText?.description == "decode as UTF-8: Invalid or incomplete multibyte or wide character")

        let missing = #expect(throws: ConfigurationFileError.self) { try ConfigurationFile.read(directory.path + "/missing").get() }
        #expect(missing?.description == "open: No such file or directory")
        // A newline in the path (from the environment) cannot start a second line.
        #expect(missing.map { ConfigurationFileError(path: "/x\nforged", reason: $0.reason) }?.line(variable: "CONFIG")
                == "CONFIG=/x\\nforged cannot be read: open: No such file or directory")
    }

    @Test func theAsyncReadRefusesAFIFOWithoutWaiting() async throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fifo = directory.appendingPathComponent("credentials").path
        #expect(mkfifo(fifo, 0o600) == 0)
        // A minute of deadline: the answer comes from fstat, not from the deadline.
        let result = await ConfigurationFile.read(fifo, timeout: .seconds(60))
        #expect(throws: ConfigurationFileError(path: fifo, reason: .notARegularFile(kind: "a FIFO"))) { try result.get() }
        let good = directory.appendingPathComponent("good").path
        try "remote 192.0.2.1 1194\n".write(toFile: good, atomically: true, encoding: .utf8)
        #expect(try await ConfigurationFile.read(good, timeout: .seconds(60)).get().text == "remote 192.0.2.1 1194\n")
    }

    /// A read that blocks (a file on a hung network file system; here a read(2) on a pipe nobody
    /// writes) ends at the deadline with an error naming it, and a second read of the same path
    /// is refused while the first still hangs instead of spending another thread.
    @Test func aReadThatBlocksEndsAtTheDeadline() async throws {
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        let reader = ends[0]
        let path = "/nfs/hung/credentials-\(UUID().uuidString)"
        let hanging: @Sendable () -> Result<ConfigurationFileContents, ConfigurationFileError> = {
            var byte: UInt8 = 0
            _ = read(reader, &byte, 1)
            return .success(ConfigurationFileContents(text: "late", mode: 0o600))
        }
        let first = await ConfigurationFile.offThread(path, timeout: .milliseconds(200), hanging)
        #expect(throws: ConfigurationFileError(path: path, reason: .timedOut(.milliseconds(200)))) { try first.get() }
        let second = await ConfigurationFile.offThread(path, timeout: .seconds(60), hanging)
        #expect(throws: ConfigurationFileError(path: path, reason: .earlierReadPending)) { try second.get() }

        // Once the stuck read returns, the path may be read again.
        var one: UInt8 = 1
        #expect(write(ends[1], &one, 1) == 1)
        var third = await ConfigurationFile.offThread(path, timeout: .seconds(10)) { .success(ConfigurationFileContents(text: "ok", mode: 0o600)) }
        let deadline = ContinuousClock.now + .seconds(10)
        while case .failure(let error) = third, error.reason == .earlierReadPending, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
            third = await ConfigurationFile.offThread(path, timeout: .seconds(10)) { .success(ConfigurationFileContents(text: "ok", mode: 0o600)) }
        }
        #expect(try third.get().text == "ok")
    }
}
