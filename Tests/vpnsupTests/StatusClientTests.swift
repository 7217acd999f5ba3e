import Foundation
import Testing
@testable import vpnsup

/// docs/security.md, "Local trust boundaries": `vpnsup status` and `health` end on their own
/// against a server that never answers, can be stopped by a signal (only `run` blocks them), and
/// never believe a status socket served by anyone but root.
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
        let server = try #require(ListeningSocket(path: directory.appendingPathComponent("status.sock").path))
        let child = try ChildProcess(["/usr/bin/timeout", "--preserve-status", "2", vpnsupBinary(), "health", "--runtime-dir", directory.path],
                                     in: directory)
        #expect(child.wait() == 128 + SIGTERM, "\(child.output)")
        _ = server
    }

    @Test func healthAndStatusGiveUpByThemselvesOnAStalledServer() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("status.sock").path
        let server = try #require(ListeningSocket(path: path))
        let health = try execute(vpnsupBinary(), ["health", "--runtime-dir", directory.path])
        #expect(health.status == 1)
        #expect(health.stdout == "unhealthy: no supervisor answers at \(path) (no answer from \(path) within 3.0 seconds)\n")
        let status = try execute(vpnsupBinary(), ["status", "--runtime-dir", directory.path])
        #expect(status.status == 69)
        #expect(status.stderr == "vpnsup status: no supervisor answers at \(path) (no answer from \(path) within 3.0 seconds)\n")
        _ = server
    }

    /// A user who could put a socket where vpnsup's was (a RUNTIME_DIR below a parent they can
    /// write) serves "TunnelUp": health says it is not root's and exits 1, status exits 69.
    @Test(.enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
                   && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "needs root, python3 and setpriv"))
    func aStatusSocketServedByAnotherUserIsNotBelieved() throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: directory.path)
        let path = directory.appendingPathComponent("status.sock").path
        let forged = #"{"state":"TunnelUp","since":"2026-01-01T00:00:00.000Z","pid":1,"startedAt":"2026-01-01T00:00:00.000Z","endpoints":[],"transitions":[]}"#
        let script = """
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(sys.argv[1]); s.listen(4)
            print("listening", flush=True)
            while True:
                c, _ = s.accept()
                try: c.sendall(sys.argv[2].encode())
                except OSError: pass  # a client that checked who serves and left
                c.close()
            """
        let server = try ChildProcess(["/usr/bin/setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                                       "/usr/bin/python3", "-c", script, path, forged], in: directory)
        defer { server.kill() }
        let deadline = ContinuousClock.now + .seconds(10)
        while !server.output.hasPrefix("listening") && ContinuousClock.now < deadline { usleep(10_000) }
        #expect(server.output.hasPrefix("listening"))

        let health = try execute(vpnsupBinary(), ["health", "--runtime-dir", directory.path])
        #expect(health.status == 1)
        #expect(health.stdout == "unhealthy: \(path) is served by uid 65534 (pid \(server.pid)), not root: not vpnsup's socket\n")
        let status = try execute(vpnsupBinary(), ["status", "--runtime-dir", directory.path])
        #expect(status.status == 69)
        #expect(status.stderr == "vpnsup status: \(path) is served by uid 65534 (pid \(server.pid)), not root: not vpnsup's socket\n")
    }
}

/// A listening unix socket that never accepts: connections wait in its backlog, unanswered.
final class ListeningSocket {
    let fd: Int32

    init?(path: String) {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 4) == 0 else {
            close(fd)
            return nil
        }
    }

    deinit { close(fd) }
}

/// A child started the way a shell starts one: empty signal mask, default dispositions (this
/// test process's threads block signals, and a mask survives exec). Output goes to a file.
final class ChildProcess {
    let pid: pid_t
    private let outputPath: String
    private var reaped = false

    init(_ argv: [String], in directory: URL) throws {
        outputPath = directory.appendingPathComponent("child-\(UUID().uuidString).out").path
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let arguments = argv.map { strdup($0) } + [nil]
        defer { arguments.forEach { free($0) } }
        var pid: pid_t = 0
        let code = posix_spawn(&pid, argv[0], &actions, &attributes, arguments, environ)
        guard code == 0 else { throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EINVAL) }
        self.pid = pid
    }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// Waits for it to end: its exit status, or 128 + the signal that ended it.
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        reaped = true
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// SIGKILL, then reaped: gone for sure.
    func kill() {
        guard !reaped else { return }
        Glibc.kill(pid, SIGKILL)
        _ = wait()
    }

    deinit { kill() }
}
