import Actions
import Foundation
import StateMachine
import SystemSupport
import Testing
@testable import Watchers
@testable import vpnsup

/// docs/security.md, "Local trust boundaries": `vpnsup status` and `health` end on their own
/// against a server that never answers, can be stopped by a signal (only `run` blocks them), and
/// never believe a status socket served by anyone but root. Children are started by vpnsup's own
/// Spawner: an empty signal mask, as a shell gives (this test process's threads block signals).
@Suite struct StatusClientTests {
    private func scratch() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vpnsup-client-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    /// `timeout 2` sends SIGTERM after 2 s, while health still waits (its own limit is 3 s): the
    /// signal ends it, and `--preserve-status` reports that (143). Had health kept SIGTERM blocked,
    /// it would have ended on its own a second later with 1.
    @Test func timeoutStopsHealthAgainstAStalledServer() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let stalled = try UnixSocket.listen(at: directory.appendingPathComponent("status.sock").path, mode: 0o600, backlog: 4)
        defer { _ = stalled }
        let run = try Spawner.capture(executable: "/usr/bin/timeout",
                                      arguments: ["--preserve-status", "2", vpnsupBinary(), "health", "--runtime-dir", directory.path],
                                      environment: [:])
        #expect(run.status == .exited(128 + SIGTERM), "\(run.output)\(run.errorOutput)")
    }

    @Test func healthAndStatusGiveUpByThemselvesOnAStalledServer() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("status.sock").path
        let stalled = try UnixSocket.listen(at: path, mode: 0o600, backlog: 4)
        defer { _ = stalled }
        let health = try execute(vpnsupBinary(), ["health", "--runtime-dir", directory.path])
        #expect(health.status == 1)
        #expect(health.stdout == "unhealthy: no supervisor answers at \(path) (no answer from \(path) within 3.0 seconds)\n")
        let status = try execute(vpnsupBinary(), ["status", "--runtime-dir", directory.path])
        #expect(status.status == 69)
        #expect(status.stderr == "vpnsup status: no supervisor answers at \(path) (no answer from \(path) within 3.0 seconds)\n")
    }

    /// A user who could put a socket where vpnsup's was (a RUNTIME_DIR below a parent they can
    /// write) serves "TunnelUp" (socat as nobody): health says it is not root's and exits 1,
    /// status exits 69.
    @Test(.enabled(if: isolatedRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/socat")
                   && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "needs root, socat and setpriv"))
    func aStatusSocketServedByAnotherUserIsNotBelieved() async throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: directory.path)
        let path = directory.appendingPathComponent("status.sock").path
        let forged = #"{"state":"TunnelUp","since":"2026-01-01T00:00:00.000Z","pid":1,"startedAt":"2026-01-01T00:00:00.000Z","endpoints":[],"transitions":[]}"#
        let answer = directory.appendingPathComponent("forged.json").path
        try forged.write(toFile: answer, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: answer)
        // socat's address syntax takes no commas in an argument: the answer comes from a file.
        let server = try Spawner.spawn(executable: "/usr/bin/setpriv",
                                       arguments: ["--reuid", "65534", "--regid", "65534", "--clear-groups",
                                                   "/usr/bin/socat", "UNIX-LISTEN:\(path),fork", "EXEC:/bin/cat \(answer)"],
                                       environment: [:])
        defer {
            Spawner.kill(pid: server)
            var status: Int32 = 0
            while waitpid(server, &status, 0) < 0 && errno == EINTR {}
            #expect(!Spawner.signal(server, 0), "the fake server is gone")
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while !FileManager.default.fileExists(atPath: path) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }

        let health = try execute(vpnsupBinary(), ["health", "--runtime-dir", directory.path])
        #expect(health.status == 1)
        #expect(health.stdout == "unhealthy: \(path) is served by uid 65534 (pid \(server)), not root: not vpnsup's socket\n")
        let status = try execute(vpnsupBinary(), ["status", "--runtime-dir", directory.path])
        #expect(status.status == 69)
        #expect(status.stderr == "vpnsup status: \(path) is served by uid 65534 (pid \(server)), not root: not vpnsup's socket\n")
    }
}
