import PropertyBased
import StateMachine
import Testing

// The wg-quick parser, kind detection, the WireGuard variables and the kill switch built for a
// WireGuard layout. Keys are throwaway pairs made with `wg genkey` for these tests.

enum WireGuardFixtures {
    static let privateKey = "uEmRqDCNdFzEiBppUwZNb47aJ9HeQPe2ZO2H9uNeans="
    static let serverKey = "J68c2AbcNDB/VyrU3oQQ/DX4N+TqGoUlfEIWhpC7TxU="
    static let serverKeyHex = "27af1cd806dc34307f572ad4de8410fc35f837e4ea1a85257c42168690bb4f15"
    static let otherKey = "Yz0xibsLJzUhP/CuwrRiMkrU88HSWxdRbSuw0x3upXY="
    static let presharedKey = "JObeYLMfmJBF86hIJ5Jg8wKZ1+VnVB+SHWCl+4RwuPk="
    static let path = "/config/wg0.conf"

    /// A provider's file as they publish them (Mullvad's shape, with wg-quick's extras).
    static let provider = """
        # Provider: example, server se-sto-wg-001
        [Interface]
        PrivateKey = \(privateKey)
        Address = 10.64.12.34/32,fc00:bbbb:bbbb:bb01::1:c21/128
        DNS = 10.64.0.1, 2001:db8::53, corp.example
        PostUp = iptables -I OUTPUT ! -o %i -m mark ! --mark $(wg show %i fwmark) -j REJECT
        PreDown = iptables -D OUTPUT ! -o %i -m mark ! --mark $(wg show %i fwmark) -j REJECT

        [Peer]
        PublicKey = \(serverKey)
        AllowedIPs = 0.0.0.0/0,::0/0
        Endpoint = 185.65.135.5:51820
        """

    static func parse(_ text: String) throws(ConfigurationError) -> WireGuardConfiguration {
        try WireGuardConfiguration(text: text, path: path)
    }

    static func error(_ text: String) -> ConfigurationError? {
        do {
            _ = try parse(text)
            return nil
        } catch {
            return error
        }
    }

    /// A minimal valid file with `interface` and `peer` lines appended to its sections.
    static func file(interface: [String] = [], peer: [String] = []) -> String {
        (["[Interface]", "PrivateKey = \(privateKey)", "Address = 10.9.0.2/32"] + interface
            + ["[Peer]", "PublicKey = \(serverKey)", "Endpoint = 198.51.100.1:51820", "AllowedIPs = 0.0.0.0/0"] + peer)
            .joined(separator: "\n")
    }
}

@Suite("WireGuard keys")
struct WireGuardKeyTests {
    @Test func base64DecodesToTheBytesWgUses() throws {
        let key = try #require(WireGuardKey(base64: WireGuardFixtures.serverKey))
        #expect(key.hex == WireGuardFixtures.serverKeyHex)
        #expect(key.base64 == WireGuardFixtures.serverKey)
        #expect(WireGuardKey(hex: WireGuardFixtures.serverKeyHex) == key)
        #expect(WireGuardKey(hex: WireGuardFixtures.serverKeyHex.uppercased()) == key)
    }

    @Test func everyKeyRoundTrips() async {
        await propertyCheck(count: 300, input: Gen.uint8(in: 0...255).array(of: 32)) { bytes in
            let key = WireGuardKey(bytes: bytes)!
            #expect(key.base64.count == 44 && key.base64.hasSuffix("="))
            #expect(WireGuardKey(base64: key.base64) == key)
            #expect(WireGuardKey(hex: key.hex) == key)
        }
    }

    @Test(arguments: [
        "",
        "J68c2AbcNDB/VyrU3oQQ/DX4N+TqGoUlfEIWhpC7TxU",     // 43: the '=' missing
        "J68c2AbcNDB/VyrU3oQQ/DX4N+TqGoUlfEIWhpC7TxU==",   // 45
        "J68c2AbcNDB/VyrU3oQQ/DX4N+TqGoUlfEIWhpC7TxV=",    // spare bits set: not how wg writes it
        "J68c2AbcNDB-VyrU3oQQ_DX4N+TqGoUlfEIWhpC7TxU=",    // URL-safe alphabet
        "J68c2AbcNDB/VyrU3oQQ/DX4N+TqGoUlfEIWhpC7Tx=U",
        " J68c2AbcNDB/VyrU3oQQ/DX4N+TqGoUlfEIWhpC7TxU=",
        "J68c2AbcNDB/VyrU3oQQ/DX4N+TqGoUlfEIWhpC7TxÜ=",
    ])
    func malformedKeysAreRefused(_ text: String) {
        #expect(WireGuardKey(base64: text) == nil)
    }

    @Test func aSecretNeverPrints() throws {
        let secret = try #require(WireGuardSecret(base64: WireGuardFixtures.privateKey))
        #expect("\(secret)" == "(secret)")
        #expect(String(reflecting: secret) == "(secret)")
        var dumped = ""
        dump(secret, to: &dumped)
        #expect(!dumped.contains(WireGuardFixtures.privateKey) && !dumped.contains(secret.key.hex))
        let configuration = try WireGuardFixtures.parse(WireGuardFixtures.provider)
        for text in ["\(configuration)", String(reflecting: configuration)] {
            #expect(!text.contains(WireGuardFixtures.privateKey) && !text.contains(secret.key.hex))
            #expect(!text.contains(String(WireGuardFixtures.privateKey.prefix(12))))
        }
    }
}

@Suite("IPv6 addresses in wg-quick files")
struct IPv6AddressTests {
    @Test(arguments: [
        ("::", "::"), ("::1", "::1"), ("2001:db8::1", "2001:db8::1"), ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("fc00:bbbb:bbbb:bb01::1:c21", "fc00:bbbb:bbbb:bb01::1:c21"), ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
        ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"), ("::ffff:192.0.2.1", "::ffff:c000:201"), ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
    ])
    func parsesAndPrintsCanonically(_ text: String, _ canonical: String) throws {
        let address = try #require(IPv6Address(text))
        #expect(address.description == canonical)
        #expect(IPv6Address(canonical) == address)
    }

    @Test(arguments: ["", ":", ":::", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "12345::", "g::1",
                      "::1%eth0", "[::1]", "1.2.3.4", "::1.2.3", ":1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8::", "::ffff:1.2.3.4:5"])
    func refusesWhatIsNotAnAddress(_ text: String) {
        #expect(IPv6Address(text) == nil)
    }

    @Test func prefixesClearHostBits() {
        #expect(WireGuardPrefix("10.1.2.3/8")?.description == "10.0.0.0/8")
        #expect(WireGuardPrefix("2001:db8::1/32")?.description == "2001:db8::/32")
        #expect(WireGuardPrefix("::0/0")?.description == "::/0")
        #expect(WireGuardPrefix("192.0.2.7")?.description == "192.0.2.7/32")
        #expect(WireGuardPrefix("2001:db8::7")?.description == "2001:db8::7/128")
        for bad in ["10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/08", "host/24", "10.0.0.0/8/8", ""] {
            #expect(WireGuardPrefix(bad) == nil, "\(bad)")
        }
    }
}

@Suite("wg-quick configuration")
struct WireGuardConfigTests {
    @Test func aProviderFileParses() throws {
        let config = try WireGuardFixtures.parse(WireGuardFixtures.provider)
        #expect(config.privateKey.key.base64 == WireGuardFixtures.privateKey)
        #expect(config.addresses.map(\.description) == ["10.64.12.34/32", "fc00:bbbb:bbbb:bb01::1:c21/128"])
        #expect(config.ipv4Addresses.map(\.description) == ["10.64.12.34/32"])
        #expect(config.dnsServers == [IPv4Address(10, 64, 0, 1)])
        #expect(config.dnsServersV6.map(\.description) == ["2001:db8::53"])
        #expect(config.searchDomains == ["corp.example"])
        #expect(config.mtu == nil && config.listenPort == nil)
        let peer = try #require(config.peers.first)
        #expect(config.peers.count == 1)
        #expect(peer.publicKey.base64 == WireGuardFixtures.serverKey)
        #expect(peer.endpoint.description == "185.65.135.5:51820")
        #expect(peer.allowedIPs.map(\.description) == ["0.0.0.0/0", "::/0"])
        #expect(peer.persistentKeepalive == nil && peer.presharedKey == nil)
        #expect(config.remotes == [Remote(host: "185.65.135.5", port: 51820, transport: .udp)])
    }

    /// wg-quick's commands never run and its routing keys never apply: each is named once, with
    /// the line of its first appearance.
    @Test func ignoredKeysAreNamedOnce() throws {
        let config = try WireGuardFixtures.parse(WireGuardFixtures.provider)
        #expect(config.notes == [
            "CONFIG=/config/wg0.conf:5 names an IPv6 DNS server, which is not used: the router carries no IPv6",
            "CONFIG=/config/wg0.conf:5 names DNS search domains, which are ignored: vpnsup enforces the resolver address only",
            "CONFIG=/config/wg0.conf:6 has PostUp, which is ignored: vpnsup never runs a command from the configuration",
            "CONFIG=/config/wg0.conf:2 has an IPv6 Address, which is not used: the router carries no IPv6",
            "CONFIG=/config/wg0.conf:9 has IPv6 AllowedIPs, which carry nothing: the router forwards no IPv6",
        ])
        let more = try WireGuardFixtures.parse(WireGuardFixtures.file(interface: [
            "Table = off", "SaveConfig = true", "FwMark = 0x1234", "PreUp = echo 1", "PreUp = echo 2", "PostDown = x",
        ]))
        #expect(more.notes == [
            "CONFIG=/config/wg0.conf:4 has Table, which is ignored: vpnsup routes the LAN through its own table",
            "CONFIG=/config/wg0.conf:5 has SaveConfig, which is ignored: vpnsup never writes the configuration",
            "CONFIG=/config/wg0.conf:6 has FwMark, which is ignored: vpnsup marks the tunnel's transport itself",
            "CONFIG=/config/wg0.conf:7 has PreUp, which is ignored: vpnsup never runs a command from the configuration",
        ])
    }

    @Test func everyFieldAndSpelling() throws {
        let text = """
            \u{FEFF}[interface]   # sections and keys are case-insensitive, as in wg
            privatekey=\(WireGuardFixtures.privateKey)
            ADDRESS = 10.9.0.2/24
            Address = 10.9.1.2
            MTU = 1380\r
            ListenPort = 51000
            DNS = 203.0.113.10
            [ Peer ]
            PublicKey = \(WireGuardFixtures.serverKey)
            PresharedKey = \(WireGuardFixtures.presharedKey)
            Endpoint = vpn.example.com.:51820
            AllowedIPs = 0.0.0.0/1
            AllowedIPs = 128.0.0.0/1, 0.0.0.0/1
            PersistentKeepalive = 15
            [Peer]
            PublicKey = \(WireGuardFixtures.otherKey)
            Endpoint = [2001:db8::1]:51820x
            """
        // The second peer's endpoint has a stray character: the line says where.
        #expect(WireGuardFixtures.error(text)?.description
                == "CONFIG=/config/wg0.conf:17 has an Endpoint that is not host:port (an IPv4 address, [IPv6 address] or host name; port 1...65535)")
        let fixed = text.replacingOccurrences("[2001:db8::1]:51820x", with: "192.0.2.9:4500") + "\nAllowedIPs = 10.200.0.0/16\nPersistentKeepalive = off"
        let config = try WireGuardFixtures.parse(fixed)
        #expect(config.addresses.map(\.description) == ["10.9.0.2/24", "10.9.1.2/32"])
        #expect(config.mtu == 1380 && config.listenPort == 51000)
        #expect(config.dnsServers == [IPv4Address(203, 0, 113, 10)])
        #expect(config.peers.count == 2)
        #expect(config.peers[0].presharedKey?.key.base64 == WireGuardFixtures.presharedKey)
        #expect(config.peers[0].endpoint.host == .name("vpn.example.com."))
        #expect(config.peers[0].allowedIPs.map(\.description) == ["0.0.0.0/1", "128.0.0.0/1"])
        #expect(config.peers[0].persistentKeepalive == 15)
        #expect(config.peers[1].persistentKeepalive == nil)
        #expect(config.notes.isEmpty, "0.0.0.0/1 and 128.0.0.0/1 cover IPv4: \(config.notes)")
        #expect(config.remotes == [Remote(host: "vpn.example.com.", port: 51820, transport: .udp),
                                   Remote(host: "192.0.2.9", port: 4500, transport: .udp)])
    }

    /// docs/reliability.md's WireGuard rows: one line each, naming file, line and field.
    @Test(arguments: [
        (WireGuardFixtures.file(interface: ["PrivateKey = \(WireGuardFixtures.privateKey)"]),
         "CONFIG=/config/wg0.conf:4 sets PrivateKey twice in [Interface]"),
        (WireGuardFixtures.file().replacingOccurrences("PrivateKey = \(WireGuardFixtures.privateKey)", with: "PrivateKey = abc"),
         "CONFIG=/config/wg0.conf:2 has a PrivateKey that is not a key (base64 of 32 bytes: 44 characters ending in '=')"),
        (WireGuardFixtures.file().replacingOccurrences("PrivateKey = \(WireGuardFixtures.privateKey)", with: "PrivateKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
         "CONFIG=/config/wg0.conf:2 has a PrivateKey of zeros, which WireGuard takes as no key"),
        (WireGuardFixtures.file().replacingOccurrences("PublicKey = \(WireGuardFixtures.serverKey)", with: "PublicKey = \(WireGuardFixtures.serverKey.dropLast())"),
         "CONFIG=/config/wg0.conf:5 has a PublicKey that is not a key (base64 of 32 bytes: 44 characters ending in '=')"),
        (WireGuardFixtures.file(peer: ["PresharedKey = hunter2"]),
         "CONFIG=/config/wg0.conf:8 has a PresharedKey that is not a key (base64 of 32 bytes: 44 characters ending in '=')"),
        (WireGuardFixtures.file().replacingOccurrences("PrivateKey = \(WireGuardFixtures.privateKey)\n", with: ""),
         "CONFIG=/config/wg0.conf:1 has no PrivateKey in [Interface]"),
        ("[Peer]\nPublicKey = \(WireGuardFixtures.serverKey)\n", "CONFIG=/config/wg0.conf has no [Interface] section"),
        ("PrivateKey = \(WireGuardFixtures.privateKey)\n[Interface]", "CONFIG=/config/wg0.conf:1 has a setting before the first [Interface] or [Peer] section"),
        (WireGuardFixtures.file(interface: ["[Interface]"]), "CONFIG=/config/wg0.conf:4 has a second [Interface] section"),
        (WireGuardFixtures.file(interface: ["[Tunnel]"]), "CONFIG=/config/wg0.conf:4 has a section other than [Interface] or [Peer]"),
        (WireGuardFixtures.file(interface: ["[Peer"]), "CONFIG=/config/wg0.conf:4 has a section header without its closing ']'"),
        (WireGuardFixtures.file(interface: ["Jc = 4"]), "CONFIG=/config/wg0.conf:4 has an unknown key Jc in [Interface]"),
        (WireGuardFixtures.file(peer: ["Endpoint2 = 1.2.3.4:5"]), "CONFIG=/config/wg0.conf:8 has an unknown key in [Peer]"),
        (WireGuardFixtures.file(interface: ["10.0.0.1"]), "CONFIG=/config/wg0.conf:4 is neither a [Section] nor a Key = Value line"),
        (WireGuardFixtures.file(interface: ["MTU ="]), "CONFIG=/config/wg0.conf:4 has MTU without a value"),
        (WireGuardFixtures.file(interface: ["= 1380"]), "CONFIG=/config/wg0.conf:4 has a line with no key before '='"),
        (WireGuardFixtures.file().replacingOccurrences("Address = 10.9.0.2/32", with: "Address = 10.9.0.2/33"),
         "CONFIG=/config/wg0.conf:3 has an Address that is not an IPv4 or IPv6 address with an optional prefix length"),
        (WireGuardFixtures.file().replacingOccurrences("Address = 10.9.0.2/32", with: "Address = 10.9.0.2/32,"),
         "CONFIG=/config/wg0.conf:3 has an empty item in Address"),
        (WireGuardFixtures.file().replacingOccurrences("Address = 10.9.0.2/32", with: "Address = fd00::2/128"),
         "CONFIG=/config/wg0.conf:1 has no IPv4 Address in [Interface]: the LAN leaves by the tunnel from one"),
        (WireGuardFixtures.file().replacingOccurrences("Address = 10.9.0.2/32", with: "Address = 0.0.0.0/0"),
         "CONFIG=/config/wg0.conf:3 has the Address 0.0.0.0, which no tunnel can use"),
        (WireGuardFixtures.file(interface: ["DNS = 10.0.0.1, bad name"]), "CONFIG=/config/wg0.conf:4 has a DNS entry that is neither an IP address nor a domain name"),
        (WireGuardFixtures.file(interface: ["DNS = 10.0.0"]), "CONFIG=/config/wg0.conf:4 has a DNS entry that is neither an IP address nor a domain name"),
        (WireGuardFixtures.file(interface: ["MTU = 500"]), "CONFIG=/config/wg0.conf:4 has an MTU that is not a number in 576...9000"),
        (WireGuardFixtures.file(interface: ["MTU = 1420.5"]), "CONFIG=/config/wg0.conf:4 has an MTU that is not a number in 576...9000"),
        (WireGuardFixtures.file(interface: ["ListenPort = 65536"]), "CONFIG=/config/wg0.conf:4 has a ListenPort that is not a port number in 0...65535"),
        (WireGuardFixtures.file(peer: ["PersistentKeepalive = -1"]),
         "CONFIG=/config/wg0.conf:8 has a PersistentKeepalive that is not off or a number of seconds in 0...65535"),
        (WireGuardFixtures.file(peer: ["Endpoint = 198.51.100.1:51820"]), "CONFIG=/config/wg0.conf:8 sets Endpoint twice in one [Peer]"),
        (WireGuardFixtures.file(peer: ["AllowedIPs = 10.0.0.0/8/8"]), "CONFIG=/config/wg0.conf:8 has an AllowedIPs entry that is not an IPv4 or IPv6 network"),
        ("[Interface]\nPrivateKey = \(WireGuardFixtures.privateKey)\nAddress = 10.9.0.2/32\n", "CONFIG=/config/wg0.conf has no [Peer] section"),
        (WireGuardFixtures.file().replacingOccurrences("PublicKey = \(WireGuardFixtures.serverKey)\n", with: ""),
         "CONFIG=/config/wg0.conf:4 has no PublicKey in [Peer]"),
        (WireGuardFixtures.file().replacingOccurrences("Endpoint = 198.51.100.1:51820\n", with: ""),
         "CONFIG=/config/wg0.conf:4 has no Endpoint in [Peer]: a router's peer must be reachable, and pinned, at a known address"),
        (WireGuardFixtures.file().replacingOccurrences("Endpoint = 198.51.100.1:51820", with: "Endpoint = [2001:db8::1]:51820"),
         "CONFIG=/config/wg0.conf:4 has the IPv6 Endpoint [2001:db8::1]:51820 in [Peer]: the WAN carries IPv4 only (an IPv4 address or a host name)"),
        (WireGuardFixtures.file().replacingOccurrences("Endpoint = 198.51.100.1:51820", with: "Endpoint = 2001:db8::1:51820"),
         "CONFIG=/config/wg0.conf:6 has an Endpoint that is not host:port (an IPv4 address, [IPv6 address] or host name; port 1...65535)"),
        (WireGuardFixtures.file().replacingOccurrences("Endpoint = 198.51.100.1:51820", with: "Endpoint = 198.51.100.1:0"),
         "CONFIG=/config/wg0.conf:6 has an Endpoint that is not host:port (an IPv4 address, [IPv6 address] or host name; port 1...65535)"),
        (WireGuardFixtures.file().replacingOccurrences("Endpoint = 198.51.100.1:51820", with: "Endpoint = 198.51.100:51820"),
         "CONFIG=/config/wg0.conf:6 has an Endpoint that is not host:port (an IPv4 address, [IPv6 address] or host name; port 1...65535)"),
        (WireGuardFixtures.file().replacingOccurrences("AllowedIPs = 0.0.0.0/0", with: "AllowedIPs = ::/0"),
         "CONFIG=/config/wg0.conf has no IPv4 AllowedIPs in any [Peer]: the LAN's traffic could go nowhere"),
        (WireGuardFixtures.file().replacingOccurrences("\nAllowedIPs = 0.0.0.0/0", with: ""),
         "CONFIG=/config/wg0.conf:4 has no AllowedIPs in [Peer]: nothing could go through it"),
        (WireGuardFixtures.file() + "\n[Peer]\nPublicKey = \(WireGuardFixtures.serverKey)\nEndpoint = 192.0.2.1:1\nAllowedIPs = 10.0.0.0/8",
         "CONFIG=/config/wg0.conf:8 has the PublicKey of [Peer] 1 again in [Peer] 2"),
        (WireGuardFixtures.file() + "\n[Peer]\nPublicKey = \(WireGuardFixtures.otherKey)\nEndpoint = 192.0.2.1:1\nAllowedIPs = 10.0.0.0/8, 0.0.0.0/0",
         "CONFIG=/config/wg0.conf:8 has the AllowedIPs 0.0.0.0/0 in [Peer] 2, already [Peer] 1's: WireGuard would keep it for one peer only"),
    ])
    func badFilesSayWhereAndWhat(_ text: String, _ message: String) {
        let error = WireGuardFixtures.error(text)
        #expect(error?.description == message)
        #expect(error?.variable == "CONFIG")
    }

    /// Whatever is wrong, the message shows neither the key that was given nor any other.
    @Test func errorsNeverShowAKey() {
        let keys = [WireGuardFixtures.privateKey, WireGuardFixtures.serverKey, WireGuardFixtures.otherKey, WireGuardFixtures.presharedKey]
        let broken = [
            // A key pasted as the key name, a key with one character wrong, keys in the wrong fields.
            WireGuardFixtures.file(interface: ["\(WireGuardFixtures.privateKey)"]),
            WireGuardFixtures.file(interface: ["\(WireGuardFixtures.otherKey.dropLast())= 1"]),
            WireGuardFixtures.file(peer: ["PresharedKey = \(WireGuardFixtures.presharedKey.dropFirst())"]),
            WireGuardFixtures.file(peer: ["Endpoint2 = \(WireGuardFixtures.otherKey)"]),
            WireGuardFixtures.file(interface: ["DNS = \(WireGuardFixtures.otherKey)"]),
            WireGuardFixtures.file(interface: ["MTU = \(WireGuardFixtures.otherKey)"]),
            WireGuardFixtures.file(interface: ["Address = \(WireGuardFixtures.presharedKey)"]),
            WireGuardFixtures.file(interface: ["[\(WireGuardFixtures.otherKey)]"]),
            WireGuardFixtures.file().replacingOccurrences("Endpoint = 198.51.100.1:51820", with: "Endpoint = \(WireGuardFixtures.otherKey):1"),
            WireGuardFixtures.file().replacingOccurrences("AllowedIPs = 0.0.0.0/0", with: "AllowedIPs = \(WireGuardFixtures.otherKey)"),
        ]
        for text in broken {
            let message = WireGuardFixtures.error(text)?.description
            #expect(message != nil, "\(text)")
            for key in keys {
                #expect(message?.contains(key.prefix(10)) != true, "\(message ?? "")")
            }
        }
    }

    /// Several peers: nested AllowedIPs are longest-prefix routing, all inside the tunnel.
    @Test func severalPeersWithNestedPrefixes() throws {
        let text = WireGuardFixtures.file() + "\n[Peer]\nPublicKey = \(WireGuardFixtures.otherKey)\nEndpoint = gw2.example.net:51820\nAllowedIPs = 10.0.0.0/8, 10.1.0.0/16"
        let config = try WireGuardFixtures.parse(text)
        #expect(config.peers.map(\.publicKey.base64) == [WireGuardFixtures.serverKey, WireGuardFixtures.otherKey])
        #expect(config.notes.isEmpty)
    }

    /// AllowedIPs that leave part of IPv4 out (a "split" profile, or one excluding private ranges)
    /// are accepted with a note: the LAN still leaves only by the tunnel; those destinations are
    /// dropped inside it.
    @Test func partialCoverageIsANoteNotAnError() throws {
        let text = WireGuardFixtures.file().replacingOccurrences("AllowedIPs = 0.0.0.0/0", with: "AllowedIPs = 0.0.0.0/5, 8.0.0.0/7, 11.0.0.0/8, 12.0.0.0/6, 16.0.0.0/4, 32.0.0.0/3, 64.0.0.0/2, 128.0.0.0/1")
        let config = try WireGuardFixtures.parse(text)
        #expect(config.notes == ["CONFIG=/config/wg0.conf has AllowedIPs that do not cover all of IPv4 (10.0.0.0 is in no peer's): the LAN's traffic to such addresses is dropped inside the tunnel, never sent by the WAN"])
    }

    /// Accepted files come back the same through their wg-quick text.
    @Test func acceptedFilesRoundTrip() throws {
        for text in [WireGuardFixtures.provider, WireGuardFixtures.file(interface: ["MTU = 1280", "ListenPort = 0"], peer: ["PresharedKey = \(WireGuardFixtures.presharedKey)", "PersistentKeepalive = 25"])] {
            let config = try WireGuardFixtures.parse(text)
            let again = try WireGuardFixtures.parse(config.wgQuickText)
            #expect(again.peers == config.peers)
            #expect(again.privateKey == config.privateKey && again.addresses == config.addresses && again.mtu == config.mtu)
            #expect(again.dnsServers == config.dnsServers && again.searchDomains == config.searchDomains && again.listenPort == config.listenPort)
        }
    }
}

@Suite("Tunnel kind and the WireGuard variables")
struct TunnelKindTests {
    @Test func detectsWgQuickFiles() {
        #expect(TunnelKind.detect(in: WireGuardFixtures.provider) == .wireguard)
        #expect(TunnelKind.detect(in: "\n; x\n  [Peer]\nPublicKey = k\n") == .wireguard)
        #expect(TunnelKind.detect(in: "[ INTERFACE ]") == .wireguard)
        #expect(TunnelKind.detect(in: "client\ndev tun\nremote vpn.example.com 1194\n[Interface]\n") == .openvpn)
        #expect(TunnelKind.detect(in: "# [Interface]\nremote 192.0.2.1\n") == .openvpn)
        #expect(TunnelKind.detect(in: "<ca>\n[Interface]\n</ca>") == .openvpn)
        #expect(TunnelKind.detect(in: "[connection]") == .openvpn)
        #expect(TunnelKind.detect(in: "") == .openvpn)
    }

    @Test func vpnTypeWins() throws {
        #expect(try TunnelKind.resolve(vpnType: "openvpn", configText: WireGuardFixtures.provider) == .openvpn)
        #expect(try TunnelKind.resolve(vpnType: "wireguard", configText: "client\n") == .wireguard)
        #expect(try TunnelKind.resolve(vpnType: "", configText: WireGuardFixtures.provider) == .wireguard)
        #expect(try TunnelKind.resolve(vpnType: nil, configText: "client\n") == .openvpn)
        #expect(throws: ConfigurationError("VPN_TYPE", "WireGuard", "is not openvpn or wireguard")) {
            try TunnelKind.resolve(vpnType: "WireGuard", configText: "")
        }
    }

    @Test func tunnelInterfaceName() throws {
        #expect(try WireGuardSettings([:]).tunnelInterface == "wg0")
        #expect(try WireGuardSettings(["TUNNEL_IF": "wg-router7"]).tunnelInterface == "wg-router7")
        #expect(throws: ConfigurationError("TUNNEL_IF", "wireguard-router0", "is not an interface name: 1 to 15 bytes")) {
            try WireGuardSettings(["TUNNEL_IF": "wireguard-router0"])
        }
        #expect(throws: ConfigurationError("TUNNEL_IF", "eth1", "is the same interface as LAN_IF")) {
            try WireGuardSettings(["TUNNEL_IF": "eth1"])
        }
        #expect(throws: ConfigurationError("TUNNEL_IF", "wan", "is the same interface as WAN_IF")) {
            try WireGuardSettings(["TUNNEL_IF": "wan", "WAN_IF": "wan"])
        }
        #expect(throws: ConfigurationError("TUNNEL_IF", "wg/0", "is not an interface name: no '/', ':', spaces or control characters")) {
            try WireGuardSettings(["TUNNEL_IF": "wg/0"])
        }
    }
}

@Suite("The kill switch for a WireGuard tunnel")
struct WireGuardRulesetTests {
    private func layout(dns: String? = nil) throws -> NetworkLayout {
        var values = ["CONFIG": "wg0.conf", "IP_ADDR": "172.22.0.1/24", "PORT_FWD": "8080:172.22.0.10:80/tcp"]
        values["DNS"] = dns
        let configuration = try Configuration(values)
        let wireGuard = try WireGuardFixtures.parse(WireGuardFixtures.provider)
        let pins = RemotePins(remotes: wireGuard.remotes)
        let endpoints = wireGuard.peerEndpoints(pins: pins)
        return configuration.wireGuardLayout(wireGuard, settings: try WireGuardSettings(["TUNNEL_IF": "wgr1"]),
                                             endpoints: Array(endpoints.values))
    }

    @Test func theWANCarriesOnlyMarkedUDPToThePeer() throws {
        let layout = try layout()
        #expect(layout.endpoints == [Endpoint(address: IPv4Address(185, 65, 135, 5), port: 51820, transport: .udp)])
        #expect(layout.tunnelInterface == "wgr1")
        for policy in [FirewallPolicy.connecting, .up] {
            let ruleset = Ruleset.build(policy, for: layout)
            let wanAccepts = ruleset.chains.flatMap(\.rules).filter { rule in
                rule.action == .accept && rule.matches.contains(.outputInterface("eth0"))
            }
            #expect(wanAccepts.count == 2, "output and egress, once each")
            for rule in wanAccepts {
                #expect(rule.matches == [.outputInterface("eth0"), .mark(Configuration.transportMark),
                                         .destinationAddress(IPv4Address(185, 65, 135, 5)), .destinationPort(.udp, 51820)])
            }
            let text = ruleset.nftText
            #expect(text.contains("oifname \"eth0\" meta mark 0x76706e01 ip daddr 185.65.135.5 udp dport 51820 accept"))
            #expect(!text.contains("tun0"))
        }
    }

    @Test func theLANGoesOnlyIntoTheTunnelAndDNSToTheFilesResolver() throws {
        let text = Ruleset.build(.up, for: try layout()).nftText
        #expect(text.contains("meta nfproto ipv4 iifname \"eth1\" oifname \"wgr1\" accept"))
        #expect(text.contains("oifname \"wgr1\" masquerade"))
        #expect(text.contains("iifname \"eth1\" ip daddr != 10.64.0.1 udp dport 53 dnat ip to 10.64.0.1"))
        // DNS set in the environment wins over the file's.
        let overridden = Ruleset.build(.up, for: try layout(dns: "203.0.113.10")).nftText
        #expect(overridden.contains("dnat ip to 203.0.113.10") && !overridden.contains("10.64.0.1"))
        // Nothing IPv6 is forwarded or sent, though the file has IPv6 addresses and ::/0.
        #expect(!text.contains("nfproto ipv6") || !text.contains("ipv6 oifname"))
        let forward = try #require(Ruleset.build(.up, for: try layout()).chain(.forward))
        for rule in forward.rules where rule.action == .accept && rule.matches.contains(.inputInterface("eth1")) {
            #expect(rule.matches.contains(.family(.ipv4)))
        }
    }

    /// A host-name endpoint is pinned to what it resolved to; each reconnect attempt takes the next.
    @Test func hostNameEndpointsRotateThroughTheirPins() throws {
        let text = WireGuardFixtures.file().replacingOccurrences("Endpoint = 198.51.100.1:51820", with: "Endpoint = VPN.example.com:51820")
        let config = try WireGuardFixtures.parse(text)
        let key = config.peers[0].publicKey
        let none = RemotePins(remotes: config.remotes)
        #expect(config.peerEndpoints(pins: none).isEmpty, "an unresolved name is not configured")
        let pins = RemotePins(remotes: config.remotes, resolved: ["vpn.example.com": [IPv4Address(192, 0, 2, 1), IPv4Address(192, 0, 2, 2)]])
        #expect(pins.endpoints.count == 2)
        #expect(config.peerEndpoints(pins: pins, attempt: 0)[key]?.description == "192.0.2.1:51820/udp")
        #expect(config.peerEndpoints(pins: pins, attempt: 1)[key]?.description == "192.0.2.2:51820/udp")
        #expect(config.peerEndpoints(pins: pins, attempt: 2)[key]?.description == "192.0.2.1:51820/udp")
        for attempt in 0..<4 {
            for endpoint in config.peerEndpoints(pins: pins, attempt: attempt).values {
                #expect(pins.endpoints.contains(endpoint), "only pinned endpoints are ever configured")
            }
        }
    }
}

extension String {
    /// Foundation's replacingOccurrences, without Foundation (this target does not import it).
    func replacingOccurrences(_ target: String, with replacement: String) -> String {
        var result = ""
        var rest = self[...]
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound] + replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
