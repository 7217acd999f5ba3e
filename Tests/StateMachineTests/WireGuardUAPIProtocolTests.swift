import StateMachine
import Testing

@Suite("WireGuard UAPI text")
struct WireGuardUAPIProtocolTests {
    private func configuration(_ extraPeer: [String] = []) throws -> WireGuardConfiguration {
        try WireGuardFixtures.parse(WireGuardFixtures.file(interface: ["ListenPort = 51000"], peer: extraPeer))
    }

    private var endpoints: [WireGuardKey: Endpoint] {
        [WireGuardKey(base64: WireGuardFixtures.serverKey)!: Endpoint(address: IPv4Address(198, 51, 100, 1), port: 51820, transport: .udp)]
    }

    @Test func theDeviceRequestSetsEverythingInOrder() throws {
        let config = try configuration(["PresharedKey = \(WireGuardFixtures.presharedKey)", "AllowedIPs = ::/0"])
        let request = WireGuardUAPIRequest.device(config, endpoints: endpoints, fwmark: Configuration.transportMark)
        let privateHex = config.privateKey.key.hex, pskHex = try #require(config.peers[0].presharedKey).key.hex
        #expect(String(decoding: request.bytes, as: UTF8.self) == """
            set=1
            private_key=\(privateHex)
            listen_port=51000
            fwmark=1987079681
            replace_peers=true
            public_key=\(WireGuardFixtures.serverKeyHex)
            preshared_key=\(pskHex)
            endpoint=198.51.100.1:51820
            persistent_keepalive_interval=25
            replace_allowed_ips=true
            allowed_ip=0.0.0.0/0
            allowed_ip=::/0


            """)
        // What a log would show: no secret.
        #expect(request.description.contains("private_key=(secret)\n") && request.description.contains("preshared_key=(secret)\n"))
        #expect(!request.description.contains(privateHex) && !request.description.contains(pskHex))
        #expect("\(request)" == request.description)
    }

    @Test func thePeersRequestCarriesNoPrivateKeyAndSkipsUnpinnedPeers() throws {
        let text = WireGuardFixtures.file(peer: ["PersistentKeepalive = 7"])
            + "\n[Peer]\nPublicKey = \(WireGuardFixtures.otherKey)\nEndpoint = gw.example.net:4500\nAllowedIPs = 10.0.0.0/8"
        let config = try WireGuardFixtures.parse(text)
        let request = WireGuardUAPIRequest.peers(config, endpoints: endpoints)
        #expect(String(decoding: request.bytes, as: UTF8.self) == """
            set=1
            replace_peers=true
            public_key=\(WireGuardFixtures.serverKeyHex)
            endpoint=198.51.100.1:51820
            persistent_keepalive_interval=7
            replace_allowed_ips=true
            allowed_ip=0.0.0.0/0


            """)
        let noKeepalive = WireGuardUAPIRequest.peers(config, endpoints: endpoints, defaultKeepalive: nil)
        #expect(!noKeepalive.description.contains("persistent_keepalive_interval=25"))
        #expect(String(decoding: WireGuardUAPIRequest.get.bytes, as: UTF8.self) == "get=1\n\n")
    }

    /// An answer as wireguard-go 0.0.20220316 gave it in the lab (keys replaced by the fixtures').
    @Test func aGetAnswerParses() throws {
        let answer = """
            private_key=909a9d6154865777328d6b7bc5cfd541c359fa5e15dd700bcc5ed36f51bf2a6d
            listen_port=51002
            fwmark=1987079681
            public_key=\(WireGuardFixtures.serverKeyHex)
            preshared_key=0000000000000000000000000000000000000000000000000000000000000000
            protocol_version=1
            endpoint=127.0.0.1:51001
            last_handshake_time_sec=1796549777
            last_handshake_time_nsec=411726034
            tx_bytes=180
            rx_bytes=92
            persistent_keepalive_interval=25
            allowed_ip=0.0.0.0/0
            public_key=\(WireGuardKey(base64: WireGuardFixtures.otherKey)!.hex)
            last_handshake_time_sec=0
            last_handshake_time_nsec=0
            tx_bytes=0
            rx_bytes=0
            persistent_keepalive_interval=0
            errno=0


            """
        let status = try WireGuardDeviceStatus.parse(Array(answer.utf8)).get()
        #expect(status.listenPort == 51002 && status.fwmark == Configuration.transportMark)
        #expect(status.peers.count == 2)
        let peer = try #require(status.peer(WireGuardKey(base64: WireGuardFixtures.serverKey)!))
        #expect(peer.endpoint == "127.0.0.1:51001")
        #expect(peer.lastHandshake == .seconds(1_796_549_777) + .nanoseconds(411_726_034))
        #expect(peer.sentBytes == 180 && peer.receivedBytes == 92 && peer.persistentKeepalive == 25)
        #expect(peer.allowedIPs == ["0.0.0.0/0"])
        #expect(status.peers[1].lastHandshake == nil, "0 is no handshake yet")
        #expect(!"\(status)".contains("909a9d61"), "the private key is not kept")
    }

    @Test func errorsAndBrokenAnswers() {
        #expect(WireGuardDeviceStatus.parse(Array("errno=0\n\n".utf8)) == .success(WireGuardDeviceStatus()))
        #expect(WireGuardDeviceStatus.parse(Array("errno=-22\n\n".utf8)) == .failure(.failed(errno: -22)))
        #expect(WireGuardDeviceStatus.parse(Array("errno=98\n\n".utf8)) == .failure(.failed(errno: 98)))
        #expect(WireGuardDeviceStatus.parse([]) == .failure(.malformed("no errno line")))
        #expect(WireGuardDeviceStatus.parse(Array("listen_port=1\n".utf8)) == .failure(.malformed("no errno line")))
        #expect(WireGuardDeviceStatus.parse(Array("garbage\nerrno=0\n".utf8)) == .failure(.malformed("a line without '='")))
        #expect(WireGuardDeviceStatus.parse(Array("tx_bytes=1\nerrno=0\n".utf8)) == .failure(.malformed("tx_bytes before any public_key")))
        #expect(WireGuardDeviceStatus.parse(Array("listen_port=70000\nerrno=0\n".utf8)) == .failure(.malformed("listen_port is not a number")))
        #expect(WireGuardDeviceStatus.parse(Array("errno=x\n".utf8)) == .failure(.malformed("errno is not a number")))
        #expect(WireGuardDeviceStatus.parse(Array("public_key=zz\nerrno=0\n".utf8)) == .failure(.malformed("public_key is not 64 hex digits")))
        let hex = WireGuardFixtures.serverKeyHex
        #expect(WireGuardDeviceStatus.parse(Array("public_key=\(hex)\nlast_handshake_time_nsec=1000000000\nerrno=0\n".utf8))
                == .failure(.malformed("last_handshake_time_nsec is not a number")))
        #expect(WireGuardDeviceStatus.parse(Array("public_key=\(hex)\nrx_bytes=-1\nerrno=0\n".utf8))
                == .failure(.malformed("rx_bytes is not a number")))
        // Keys a newer device adds are skipped.
        #expect(WireGuardDeviceStatus.parse(Array("jc=4\nerrno=0\n".utf8)) == .success(WireGuardDeviceStatus()))
    }
}
