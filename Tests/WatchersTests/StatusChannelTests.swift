import Glibc
import SystemSupport
import Testing
import TestSupport
@testable import Watchers

/// docs/security.md, "Local trust boundaries": the status socket serves every client without
/// letting one stall the others, refuses what is not a socket at its path, and its client
/// believes only a root server and gives up at its deadline.
@Suite struct StatusChannelTests {
    /// A snapshot far larger than a socket buffer, and a client that connects and never reads:
    /// another client still gets the whole snapshot, well before the stalled one is dropped
    /// (its fetch timeout is shorter than the server's per-client deadline).
    @Test func aClientThatNeverReadsDoesNotDelayAnother() async throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        let path = directory + "/status.sock"
        let snapshot = [UInt8]((0 ..< (4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let channel = try StatusChannel.listen(at: path) { snapshot }
        defer { channel.close() }

        let stalled = try #require(TestClient(path: path))
        #expect(StatusChannel.clientDeadline > .seconds(1))
        let answer = try StatusChannel.fetch(from: path, timeout: .seconds(1))
        #expect(answer == snapshot)

        // The stalled client, reading after the server's deadline for it, gets what fitted in
        // the buffers and then end of file: the server dropped it rather than wait for it.
        try await Task.sleep(for: StatusChannel.clientDeadline + .milliseconds(500))
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(stalled.fd, &buffer, buffer.count, 0)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                #expect(count == 0, "errno \(errno)")
                break
            }
            received += count
        }
        #expect(received > 0 && received < snapshot.count, "received \(received) of \(snapshot.count)")
    }

    @Test func refusesARegularFileAtItsPathAndLeavesItAlone() throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        let path = directory + "/status.sock"
        TestSystem.writeFile(path, "not a socket")
        #expect(throws: ChannelError.notASocket(path)) { try StatusChannel.listen(at: path) { [] } }
        #expect(TestSystem.readFile(path) == "not a socket")

        // A stale socket is replaced, as before.
        let stale = directory + "/stale.sock"
        TestSystem.makeStaleSocket(stale)
        let channel = try StatusChannel.listen(at: stale) { Array("{}".utf8) }
        #expect(try StatusChannel.fetch(from: stale) == Array("{}".utf8))
        channel.close()
        #expect(TestSystem.fileMode(stale) == nil)
    }

    /// A server that never answers (its listen backlog holds the connection, nobody accepts).
    @Test func fetchGivesUpOnAServerThatNeverAnswers() throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        let path = directory + "/status.sock"
        let stalled = try UnixSocket.listen(at: path, mode: 0o600, backlog: 4)  // never accepts
        defer { _ = stalled }
        #expect(throws: ChannelError.timedOut(path: path, after: .milliseconds(300))) {
            try StatusChannel.fetch(from: path, timeout: .milliseconds(300))
        }
    }

    /// A status socket someone else serves (a user who could write RUNTIME_DIR's parent) is not
    /// believed, whatever it says; the same server is read when its uid is the one asked for.
    @Test(.enabled(if: isolatedRootNetns && PeerProcess.available, "needs root in a private network namespace and /usr/bin/python3"))
    func fetchRefusesAServerThatIsNotRoot() async throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        chmod(directory, 0o777)
        let path = directory + "/status.sock"
        let forged = #"{"state":"TunnelUp"}"#
        let server = PeerProcess.server(at: path, answering: forged, output: directory + "/server.out", user: 65534)
        #expect(await server.waitFor("listening"), "\(server.printed)")
        let error = #expect(throws: ChannelError.self) { try StatusChannel.fetch(from: path) }
        guard case .untrustedServer(path, let peer)? = error else {
            Issue.record("not refused as untrusted: \(String(describing: error))")
            _ = await server.stop()
            return
        }
        #expect(peer.uid == 65534 && peer.pid == server.pid)
        #expect(error?.description == "\(path) is served by uid 65534 (pid \(server.pid)), not root: not vpnsup's socket")
        #expect(try StatusChannel.fetch(from: path, serverUID: 65534) == Array(forged.utf8))
        #expect(await server.stop())
    }
}
