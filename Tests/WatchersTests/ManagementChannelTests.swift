import Glibc
import StateMachine
import Testing
@testable import Watchers

private func count(_ event: ManagementChannelEvent, in events: [ManagementChannelEvent]) -> Int {
    events.filter { $0 == event }.count
}

private func messages(_ events: [ManagementChannelEvent]) -> [ManagementMessage] {
    events.compactMap { if case .message(let message) = $0 { message } else { nil } }
}

@Suite struct ManagementChannelTests {
    @Test func exchangesLinesAndAcceptsAReconnect() async throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        let path = directory + "/management.sock"
        // The test process itself plays OpenVPN.
        let channel = try ManagementChannel.listen(at: path, initialCommands: ["state on all"], expecting: .process(getpid()))
        let log = EventLog(channel.events)

        let mode = try #require(TestSystem.fileMode(path))
        #expect(mode & UInt32(S_IFMT) == UInt32(S_IFSOCK))
        #expect(mode & 0o777 == 0o600)
        #expect(throws: ManagementChannelError.notConnected) { try channel.send("hold release") }

        let client = try #require(TestClient(path: path))
        #expect(client.readLine() == "state on all")
        #expect(await log.wait { $0 == [.connected] })
        #expect(channel.isConnected)

        // A line split across writes, CRLF ends, as OpenVPN writes them.
        client.write(">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r\n>HOLD:Waiting for ")
        client.write("hold release:0\r\n")
        #expect(await log.wait { messages($0).count == 2 })
        #expect(messages(log.items) == [
            .info("OpenVPN Management Interface Version 5 -- type 'help' for more info"),
            .hold("Waiting for hold release:0"),
        ])

        try channel.send("hold release")
        #expect(client.readLine() == "hold release")
        try channel.send("password \"Auth\" " + managementQuoted("p\"w")!)
        #expect(client.readLine() == #"password "Auth" "p\"w""#)
        #expect(throws: ManagementChannelError.invalidCommand) { try channel.send("hold release\nsignal SIGTERM") }
        #expect(throws: ManagementChannelError.invalidCommand) { try channel.send("x\r") }

        client.close()
        #expect(await log.wait { count(.disconnected, in: $0) == 1 })
        #expect(!channel.isConnected)
        #expect(throws: ManagementChannelError.notConnected) { try channel.send("hold release") }

        // The next OpenVPN (a respawn) connects to the same socket.
        let second = try #require(TestClient(path: path))
        #expect(second.readLine() == "state on all")
        #expect(await log.wait { count(.connected, in: $0) == 2 })
        second.write(">STATE:1700000002,CONNECTED,SUCCESS,10.8.0.6,192.0.2.1,1194,,,\r\n")
        #expect(await log.wait { $0.last == .message(.state(StateRecord(
            time: 1_700_000_002, state: .connected, detail: "SUCCESS", tunnelIPv4: "10.8.0.6",
            remoteAddress: "192.0.2.1", remotePort: "1194"))) })

        // Closing drops the connection (OpenVPN then exits), ends the stream, removes the socket.
        channel.close()
        #expect(second.readsEndOfFile())
        #expect(await log.wait { _, finished in finished })
        #expect(log.items.last == .disconnected)
        #expect(TestSystem.fileMode(path) == nil)
        channel.close()
    }

    @Test func aPartialLineAtDisconnectIsReported() async throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        let channel = try ManagementChannel.listen(at: directory + "/m.sock", expecting: .process(getpid()))
        defer { channel.close() }
        let log = EventLog(channel.events)
        let client = try #require(TestClient(path: directory + "/m.sock"))
        client.write(">INFO:complete\n>FATAL:cut sh")
        client.close()
        #expect(await log.wait { $0.last == .disconnected })
        #expect(log.items == [
            .connected, .message(.info("complete")), .message(.malformed("unterminated line: >FATAL:cut sh")), .disconnected,
        ])
    }

    @Test func replacesAStaleSocketButNothingElse() throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        let path = directory + "/management.sock"

        // A socket file left by a crashed run.
        TestSystem.makeStaleSocket(path)
        #expect(TestClient(path: path) == nil)
        let first = try ManagementChannel.listen(at: path, expecting: .process(getpid()))
        #expect(TestClient(path: path) != nil)

        // A second channel at the same path replaces the file; closing the first one must not
        // remove the second one's socket.
        let second = try ManagementChannel.listen(at: path, expecting: .process(getpid()))
        first.close()
        #expect(TestSystem.fileMode(path) != nil)
        #expect(TestClient(path: path) != nil)
        second.close()
        #expect(TestSystem.fileMode(path) == nil)

        let regular = directory + "/not-a-socket"
        TestSystem.writeFile(regular, "keep me")
        #expect(throws: ManagementChannelError.notASocket(regular)) { try ManagementChannel.listen(at: regular) }
        #expect(TestSystem.readFile(regular) == "keep me")

        let long = directory + "/" + String(repeating: "x", count: 120)
        #expect(throws: ManagementChannelError.pathTooLong(long)) { try ManagementChannel.listen(at: long) }
        #expect(throws: ManagementChannelError.invalidCommand) {
            try ManagementChannel.listen(at: path, initialCommands: ["state on\nsignal SIGTERM"])
        }
    }

    /// Two OpenVPN 2.6 peers on localhost with `--dev null` (no interface, no address, no route:
    /// the host's network is untouched), TLS with self-signed certificates pinned by fingerprint.
    /// The one with `--management-client` connects to our socket; we release its hold, watch it
    /// reach CONNECTED, then close the channel and check that OpenVPN exits on its own.
    @Test(.enabled(if: TestSystem.isExecutable("/usr/sbin/openvpn") && TestSystem.isExecutable("/usr/bin/openssl")))
    func realOpenVPNConnectsReachesConnectedAndExitsWhenTheChannelCloses() async throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        var fingerprints: [String: String] = [:]
        for name in ["server", "client"] {
            _ = await TestSystem.run("/usr/bin/openssl", [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                "-subj", "/CN=\(name)", "-keyout", "\(directory)/\(name).key", "-out", "\(directory)/\(name).crt",
            ], in: directory)
            let output = await TestSystem.run("/usr/bin/openssl", [
                "x509", "-in", "\(directory)/\(name).crt", "-noout", "-fingerprint", "-sha256",
            ], in: directory)
            let line = try #require(output?.split(separator: "\n").first { $0.contains("=") })
            fingerprints[name] = String(line.split(separator: "=")[1])
        }
        let serverPort = UInt16.random(in: 20000...39999)
        let clientPort = serverPort + 20000
        let common = ["--dev", "null", "--proto", "udp", "--ifconfig-noexec", "--route-noexec", "--ifconfig-nowarn",
                      "--ping", "1", "--verb", "3"]

        let channel = try ManagementChannel.listen(at: directory + "/management.sock", initialCommands: ["state on all"])
        defer { channel.close() }
        let log = EventLog(channel.events)

        let server = TestSystem.spawn("/usr/sbin/openvpn", common + [
            "--tls-server", "--dh", "none", "--cert", "\(directory)/server.crt", "--key", "\(directory)/server.key",
            "--peer-fingerprint", fingerprints["client"]!, "--local", "127.0.0.1", "--lport", "\(serverPort)",
            "--remote", "127.0.0.1", "\(clientPort)", "--ifconfig", "10.8.0.5", "10.8.0.6",
        ], output: directory + "/server.log")
        let client = TestSystem.spawn("/usr/sbin/openvpn", common + [
            "--tls-client", "--cert", "\(directory)/client.crt", "--key", "\(directory)/client.key",
            "--peer-fingerprint", fingerprints["server"]!, "--local", "127.0.0.1", "--lport", "\(clientPort)",
            "--remote", "127.0.0.1", "\(serverPort)", "--ifconfig", "10.8.0.6", "10.8.0.5",
            "--management", directory + "/management.sock", "unix", "--management-client", "--management-hold",
        ], output: directory + "/client.log")
        defer {
            kill(server, SIGKILL)
            kill(client, SIGKILL)
            TestSystem.reap(server)
            TestSystem.reap(client)
        }

        #expect(await log.wait { $0.contains(.message(.hold("Waiting for hold release:0"))) })
        // The history answered to `state on all`, then its END, all before the hold is released.
        #expect(await log.wait { $0.contains(.message(.endOfReply)) })
        let beforeRelease = log.items
        #expect(beforeRelease.first == .connected)
        #expect(messages(beforeRelease).contains(.success("real-time state notification set to ON")))
        #expect(messages(beforeRelease).contains { if case .state(let r) = $0 { r.state == .connecting } else { false } })

        try channel.send("hold release")
        let connected = await log.wait(timeout: .seconds(20)) { events in
            messages(events).contains { if case .state(let r) = $0 { r.state == .connected } else { false } }
        }
        #expect(connected, "client log: \(TestSystem.readFile(directory + "/client.log") ?? "")")
        let record = messages(log.items).compactMap { message -> StateRecord? in
            if case .state(let r) = message, r.state == .connected { r } else { nil }
        }.first
        #expect(record?.detail == "SUCCESS")
        #expect(record?.tunnelIPv4 == "10.8.0.6")
        #expect(record?.remoteAddress == "127.0.0.1")
        #expect(record?.remotePort == "\(serverPort)")
        #expect(record?.localPort == "\(clientPort)")
        #expect(!messages(log.items).contains { if case .malformed = $0 { true } else { false } })

        channel.close()
        #expect(await TestSystem.waitUntilExited(client), "OpenVPN kept running without its management connection")
        #expect(await log.wait { _, finished in finished })
    }
}
