import StateMachine
import Testing

private func ip(_ text: String) -> IPv4Address { IPv4Address(text)! }

@Suite struct RemotePinsTests {
    let remotes = OpenVPNConfigFile.remotes(in: """
        client
        remote vpn.example.com 1194
        remote 192.0.2.1 443 tcp
        remote VPN.example.com 443 tcp-client
        remote dead.example.com 1194
        remote 2001:db8::1 1194
        remote vpn.example.com. 1195 udp4
        """)

    var pins: RemotePins {
        RemotePins(remotes: remotes, resolved: ["vpn.example.com": [ip("198.51.100.1"), ip("198.51.100.2"), ip("198.51.100.3")]])
    }

    @Test func spellingsOfOneNameMerge() {
        let merged = RemotePins(remotes: remotes, resolved: [
            "vpn.example.com": [ip("198.51.100.1"), ip("198.51.100.2")],
            "VPN.Example.com.": [ip("198.51.100.2"), ip("198.51.100.3")],
        ])
        #expect(merged.resolved.keys.sorted() == ["vpn.example.com"])
        #expect(Set(merged.resolved["vpn.example.com"] ?? []) == [ip("198.51.100.1"), ip("198.51.100.2"), ip("198.51.100.3")])
        #expect(merged.resolved["vpn.example.com"]?.count == 3)
    }

    @Test func hostNamesToResolve() {
        // Case and a trailing dot do not make another name; literals need no resolution.
        #expect(RemotePins.hostNames(in: remotes) == ["vpn.example.com", "dead.example.com"])
        #expect(remotes.map(\.isHostName) == [true, false, true, true, false, true])
    }

    @Test func endpointsPinEveryAddressWithItsRemotesPortAndProtocol() {
        #expect(pins.endpoints == [
            Endpoint(address: ip("198.51.100.1"), port: 1194, transport: .udp),
            Endpoint(address: ip("198.51.100.2"), port: 1194, transport: .udp),
            Endpoint(address: ip("198.51.100.3"), port: 1194, transport: .udp),
            Endpoint(address: ip("192.0.2.1"), port: 443, transport: .tcp),
            Endpoint(address: ip("198.51.100.1"), port: 443, transport: .tcp),
            Endpoint(address: ip("198.51.100.2"), port: 443, transport: .tcp),
            Endpoint(address: ip("198.51.100.3"), port: 443, transport: .tcp),
            Endpoint(address: ip("198.51.100.1"), port: 1195, transport: .udp),
            Endpoint(address: ip("198.51.100.2"), port: 1195, transport: .udp),
            Endpoint(address: ip("198.51.100.3"), port: 1195, transport: .udp),
        ])
        #expect(pins.unresolved == ["dead.example.com"])
        #expect(RemotePins(remotes: remotes).endpoints == [Endpoint(address: ip("192.0.2.1"), port: 443, transport: .tcp)])
    }

    @Test func aHostNameGetsItsPinnedAddressesInTurn() {
        var pins = pins
        let answers = (0..<4).map { _ in pins.answer(host: "vpn.example.com", port: 1194, proto: "udp") }
        #expect(answers == [.modify(ip("198.51.100.1"), port: 1194), .modify(ip("198.51.100.2"), port: 1194),
                            .modify(ip("198.51.100.3"), port: 1194), .modify(ip("198.51.100.1"), port: 1194)])
        #expect(answers[0].command == "remote MOD 198.51.100.1 1194")
        // Each remote (host, port, protocol) rotates on its own; names compare case-insensitively.
        #expect(pins.answer(host: "VPN.example.com", port: 443, proto: "tcp-client") == .modify(ip("198.51.100.1"), port: 443))
        #expect(pins.answer(host: "vpn.example.com.", port: 1195, proto: "udp4") == .modify(ip("198.51.100.1"), port: 1195))
    }

    @Test func aPinnedLiteralIsAcceptedAsIs() {
        var pins = pins
        #expect(pins.answer(host: "192.0.2.1", port: 443, proto: "tcp-client") == .accept)
        #expect(RemoteAnswer.accept.command == "remote ACCEPT")
    }

    @Test func whatIsNotPinnedIsSkipped() {
        var pins = pins
        let skipped: [(String, UInt16?, String)] = [
            ("dead.example.com", 1194, "udp"),     // did not resolve
            ("192.0.2.1", 1194, "udp"),            // pinned for tcp/443 only
            ("192.0.2.99", 443, "tcp-client"),     // not in the configuration
            ("vpn.example.com", 1196, "udp"),      // a port no remote line has
            ("vpn.example.com", 1194, "tcp-client"),
            ("vpn.example.com", 1194, "udp6"),     // IPv6 only: an IPv4 pin cannot serve it
            ("vpn.example.com", 443, "tcp6-client"),
            ("2001:db8::1", 1194, "udp"),
            ("vpn.example.com", nil, "udp"),
            ("vpn.example.com", 1194, "sctp"),
            ("other.example.com", 1194, "udp"),
        ]
        for (host, port, proto) in skipped {
            #expect(pins.answer(host: host, port: port, proto: proto) == .skip, "\(host) \(port.map(String.init) ?? "-") \(proto)")
        }
        #expect(RemoteAnswer.skip.command == "remote SKIP")
    }

    /// OpenVPN's own table (socket.c proto_names), case-sensitive as OpenVPN reads it.
    @Test func openVPNProtocolNames() {
        for name in ["udp", "udp4", "udp6"] { #expect(TransportProtocol(openVPNName: name) == .udp) }
        for name in ["tcp", "tcp4", "tcp6", "tcp-client", "tcp4-client", "tcp6-client", "tcp-server", "tcp6-server"] {
            #expect(TransportProtocol(openVPNName: name) == .tcp)
        }
        for name in ["UDP", "Tcp", "udp 6", "sctp", "tcp-client6", ""] { #expect(TransportProtocol(openVPNName: name) == nil, "\(name)") }
        #expect(OpenVPNProtocol(openVPNName: "udp6") == OpenVPNProtocol(role: .udp, family: .ipv6))
        #expect(OpenVPNProtocol(openVPNName: "tcp4-client") == OpenVPNProtocol(role: .tcpClient, family: .ipv4))
        #expect(OpenVPNProtocol(openVPNName: "tcp6-server") == OpenVPNProtocol(role: .tcpServer, family: .ipv6))
        // Printed as OpenVPN prints it (its --verb 4 dump, >REMOTE:): tcp becomes tcp-client for a client.
        for name in ["udp", "udp4", "udp6", "tcp", "tcp-client", "tcp4-client", "tcp6-client", "tcp-server"] {
            #expect(OpenVPNProtocol(openVPNName: name)?.description == name)
        }
        #expect(OpenVPNProtocol(openVPNName: "tcp6")?.asClient.description == "tcp6-client")
    }

    /// An IPv6-only protocol is never pinned: its host name is not resolved (A records could not
    /// be used), its literal is no endpoint, and OpenVPN is told to skip it.
    @Test func ipv6OnlyProtocolsAreNeitherResolvedNorPinned() {
        let remotes = OpenVPNConfigFile.remotes(in: "client\nremote v6.example.com 1194 udp6\nremote 192.0.2.7 443 tcp6-client\nremote vpn.example.com\n")
        #expect(remotes.map(\.family) == [.ipv6, .ipv6, .any])
        #expect(RemotePins.hostNames(in: remotes) == ["vpn.example.com"])
        var pins = RemotePins(remotes: remotes, resolved: ["v6.example.com": [ip("198.51.100.6")], "vpn.example.com": [ip("198.51.100.1")]])
        #expect(pins.endpoints == [Endpoint(address: ip("198.51.100.1"), port: 1194, transport: .udp)])
        #expect(pins.answer(host: "v6.example.com", port: 1194, proto: "udp6") == .skip)
        #expect(pins.answer(host: "192.0.2.7", port: 443, proto: "tcp6-client") == .skip)
        #expect(pins.answer(host: "vpn.example.com", port: 1194, proto: "udp") == .modify(ip("198.51.100.1"), port: 1194))
    }
}
