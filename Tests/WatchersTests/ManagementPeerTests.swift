import Glibc
import StateMachine
import SystemSupport
import Testing
@testable import Watchers

/// docs/security.md, "Local trust boundaries": the management socket is OpenVPN's alone. A peer
/// that is not root, or not the OpenVPN vpnsup started, is closed before it gets a byte, and the
/// channel keeps accepting until the expected peer arrives.
@Suite(.enabled(if: isolatedRootNetns && PeerProcess.available, "needs root in a private network namespace and /usr/bin/python3"))
struct ManagementPeerTests {
    /// The attack of issue 18: a root process connects while no OpenVPN runs (before a respawn)
    /// and waits for `>HOLD` answers and the password. It gets end of file and nothing else; the
    /// OpenVPN started next (here the test process) is served, credentials and all.
    @Test func aRogueClientConnectedFirstGetsNothingAndTheExpectedPeerIsServed() async throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        let path = directory + "/management.sock"
        let channel = try ManagementChannel.listen(at: path, initialCommands: ["state on all"], expecting: .nobody)
        defer { channel.close() }
        let log = EventLog(channel.events)

        let rogue = PeerProcess.client(connectingTo: path, output: directory + "/rogue.out")
        #expect(await rogue.waitFor("eof"), "the rogue was not closed: \(rogue.printed)")
        #expect(rogue.printed.contains("eof 0 "), "the rogue received bytes: \(rogue.printed)")
        #expect(await log.wait { $0.contains { if case .refusedPeer(let peer?, _) = $0 { peer.pid == rogue.pid } else { false } } })
        #expect(await rogue.stop())

        // OpenVPN is started: from now on its pid alone is served. A second rogue, queued before
        // it, is refused again and does not hold the one-slot backlog.
        channel.expect(.process(getpid()))
        let second = PeerProcess.client(connectingTo: path, output: directory + "/second.out")
        #expect(await second.waitFor("eof"), "\(second.printed)")
        #expect(second.printed.contains("eof 0 "), "\(second.printed)")
        let openvpn = try #require(TestClient(path: path))
        #expect(openvpn.readLine() == "state on all")
        #expect(await log.wait { $0.contains(.connected) })
        try channel.send("password \"Auth\" \"hunter2\"")
        #expect(openvpn.readLine() == #"password "Auth" "hunter2""#)
        #expect(await second.stop())

        let refused = log.items.compactMap { if case .refusedPeer(let peer?, let reason) = $0 { (peer, reason) } else { nil } }
        #expect(refused.map(\.0.pid) == [rogue.pid, second.pid])
        #expect(refused.allSatisfy { $0.0.uid == 0 })
        #expect(refused[0].1 == "no OpenVPN is expected (none is running)")
        #expect(refused[1].1 == "not the OpenVPN vpnsup started (pid \(getpid()))")
    }

    /// With no pid named, only root children of this process are served: another root process
    /// (a child of init, say) is not.
    @Test func byDefaultOnlyAChildProcessIsServed() async throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        let path = directory + "/management.sock"
        let channel = try ManagementChannel.listen(at: path, initialCommands: ["state on all"])
        defer { channel.close() }
        let log = EventLog(channel.events)

        // The test process is not its own child.
        let stranger = try #require(TestClient(path: path))
        #expect(stranger.readsEndOfFile())
        #expect(await log.wait { $0.contains { if case .refusedPeer(_, "not a child process of vpnsup") = $0 { true } else { false } } })

        let child = PeerProcess.client(connectingTo: path, output: directory + "/child.out")
        #expect(await log.wait { $0.contains(.connected) })
        channel.close()  // ends the child's connection: it prints what it got
        #expect(await child.waitFor("eof"), "\(child.printed)")
        #expect(child.printed.contains("eof 13 " + Array("state on all\n".utf8).map { String(format2: $0) }.joined()), "\(child.printed)")
        #expect(await child.stop())
    }

    /// Naming another peer drops the current connection: a stale OpenVPN keeps nothing.
    @Test func expectingAnotherPeerDropsTheCurrentOne() async throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        let path = directory + "/management.sock"
        let channel = try ManagementChannel.listen(at: path, expecting: .process(getpid()))
        defer { channel.close() }
        let log = EventLog(channel.events)
        let client = try #require(TestClient(path: path))
        #expect(await log.wait { $0 == [.connected] })
        channel.expect(.nobody)
        #expect(client.readsEndOfFile())
        #expect(await log.wait { $0.last == .disconnected })
        #expect(throws: ChannelError.notConnected) { try channel.send("hold release") }
    }

    /// Other users never get that far: the socket is 0600 root (EACCES), even in a directory
    /// they may search.
    @Test func aNonRootClientIsKeptOutByTheSocketMode() async throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        chmod(directory, 0o755)
        let path = directory + "/management.sock"
        let channel = try ManagementChannel.listen(at: path)
        defer { channel.close() }
        let nobody = PeerProcess.client(connectingTo: path, output: directory + "/nobody.out", user: 65534)
        #expect(await nobody.waitFor("connect-error"), "\(nobody.printed)")
        #expect(nobody.printed.contains("connect-error \(EACCES)"), "\(nobody.printed)")
        #expect(await nobody.stop())
    }
}

private extension String {
    /// Two lower-case hex digits.
    init(format2 byte: UInt8) {
        self = (byte < 16 ? "0" : "") + String(byte, radix: 16)
    }
}
