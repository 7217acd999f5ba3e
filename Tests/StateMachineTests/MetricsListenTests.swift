import Testing
@testable import StateMachine

/// METRICS_LISTEN: parsed to the LAN gateway address or loopback only, and admitted by the input
/// chain from the LAN to the gateway address only.
@Suite("METRICS_LISTEN")
struct MetricsListenTests {
    static let base = ["CONFIG": "/config/client.ovpn", "IP_ADDR": "172.22.0.1/24"]

    static func configuration(_ extra: [String: String]) throws(ConfigurationError) -> Configuration {
        try Configuration(base.merging(extra) { $1 })
    }

    @Test func offByDefault() throws {
        let configuration = try Self.configuration([:])
        #expect(configuration.metricsListen == nil)
        #expect(configuration.layout(endpoints: []).metricsPort == nil)
        #expect(try Self.configuration(["METRICS_LISTEN": ""]).metricsListen == nil, "empty counts as unset")
    }

    @Test(arguments: [("172.22.0.1:9477", IPv4Address(172, 22, 0, 1), UInt16(9477)),
                      ("127.0.0.1:9100", IPv4Address(127, 0, 0, 1), 9100),
                      ("127.9.8.7:1", IPv4Address(127, 9, 8, 7), 1),
                      ("172.22.0.1:65535", IPv4Address(172, 22, 0, 1), 65535)])
    func accepted(_ text: String, _ address: IPv4Address, _ port: UInt16) throws {
        let listen = try #require(try Self.configuration(["METRICS_LISTEN": text]).metricsListen)
        #expect(listen == MetricsListen(address: address, port: port))
        #expect(listen.description == text)
    }

    static let refused: [(value: String, extra: [String: String], problem: String)] = [
        ("9477", [:], "is not ADDR:PORT with an IPv4 address, e.g. 172.22.0.1:9477"),
        (":9477", [:], "is not ADDR:PORT with an IPv4 address, e.g. 172.22.0.1:9477"),
        ("localhost:9477", [:], "is not ADDR:PORT with an IPv4 address, e.g. 172.22.0.1:9477"),
        ("172.22.0.1:9477:1", [:], "is not ADDR:PORT with an IPv4 address, e.g. 172.22.0.1:9477"),
        ("[::1]:9477", [:], "is not ADDR:PORT with an IPv4 address, e.g. 172.22.0.1:9477"),
        ("172.22.0.1:0", [:], "has a port outside 1...65535"),
        ("172.22.0.1:65536", [:], "has a port outside 1...65535"),
        ("172.22.0.1:", [:], "has a port outside 1...65535"),
        ("172.22.0.1:http", [:], "has a port outside 1...65535"),
        ("172.22.0.1:+80", [:], "has a port outside 1...65535"),
        // Anything the WAN (or another LAN host's address) could carry.
        ("0.0.0.0:9477", [:], "is neither the LAN gateway address 172.22.0.1 (IP_ADDR) nor a loopback address: metrics are never served on the WAN"),
        ("198.51.100.2:9477", [:], "is neither the LAN gateway address 172.22.0.1 (IP_ADDR) nor a loopback address: metrics are never served on the WAN"),
        ("172.22.0.10:9477", [:], "is neither the LAN gateway address 172.22.0.1 (IP_ADDR) nor a loopback address: metrics are never served on the WAN"),
        ("10.8.0.2:9477", [:], "is neither the LAN gateway address 172.22.0.1 (IP_ADDR) nor a loopback address: metrics are never served on the WAN"),
        ("172.22.0.1:53", ["DNS": "10.8.0.1"], "uses port 53, which DNS redirection takes from the LAN"),
    ]

    @Test(arguments: refused.indices)
    func refusedWithOneLineNamingTheVariable(_ index: Int) {
        let (value, extra, problem) = Self.refused[index]
        #expect(throws: ConfigurationError("METRICS_LISTEN", value, problem)) {
            try Self.configuration(extra.merging(["METRICS_LISTEN": value]) { $1 })
        }
        let line = ConfigurationError("METRICS_LISTEN", value, problem).description
        #expect(line.hasPrefix("METRICS_LISTEN=\(value) ") && !line.contains("\n"))
    }

    @Test func port53IsOnlyRefusedWhereDNSRedirectionTakesIt() throws {
        #expect(try Self.configuration(["METRICS_LISTEN": "172.22.0.1:53"]).metricsListen?.port == 53)
        #expect(try Self.configuration(["METRICS_LISTEN": "127.0.0.1:53", "DNS": "10.8.0.1"]).metricsListen?.port == 53)
    }

    @Test func theLayoutCarriesThePortOnlyForTheGatewayAddress() throws {
        #expect(try Self.configuration(["METRICS_LISTEN": "172.22.0.1:9477"]).layout(endpoints: []).metricsPort == 9477)
        #expect(try Self.configuration(["METRICS_LISTEN": "127.0.0.1:9477"]).layout(endpoints: []).metricsPort == nil,
                "loopback is accepted by the input chain already")
    }
}

/// A packet arriving for the router itself, as the input chain sees it.
private struct Arrival: CustomStringConvertible {
    var input: String
    var destination: IPv4Address
    var transport: TransportProtocol? = .tcp
    var port: UInt16 = 9477
    var state: ConnectionStates = .new

    var description: String { "in=\(input) -> \(destination) \(transport.map { "\($0)" } ?? "icmp") dport \(port)" }
}

/// The input chain's verdict (true: accepted): the first rule that matches decides, else the policy.
private func accepted(_ ruleset: Ruleset, _ packet: Arrival) throws -> Bool {
    let chain = try #require(ruleset.chain(.input))
    for rule in chain.rules {
        let matched = rule.matches.allSatisfy { match in
            switch match {
            case .inputInterface(let name): return packet.input == name
            case .destinationAddress(let address): return packet.destination == address
            case .notDestinationAddress(let address): return packet.destination != address
            case .destinationPort(let transport, let port): return packet.transport == transport && packet.port == port
            case .connectionState(let states): return !states.intersection(packet.state).isEmpty
            case .protocolICMP: return packet.transport == nil
            case .neighbourDiscovery: return false // IPv6 only
            default:
                Issue.record("unexpected match \(match)")
                return false
            }
        }
        guard matched else { continue }
        switch rule.action {
        case .accept: return true
        case .drop: return false
        default: Issue.record("unexpected action \(rule.action)")
        }
    }
    return chain.policy == .accept
}

@Suite("Metrics admission")
struct MetricsAdmissionTests {
    static let gateway = IPv4Address(172, 22, 0, 1)
    static var layout: NetworkLayout {
        var layout = exampleLayout
        layout.metricsPort = 9477
        return layout
    }

    @Test(arguments: [FirewallPolicy.connecting, .up])
    func lanHostsReachThePortOnTheGatewayAddressOnly(_ policy: FirewallPolicy) throws {
        let ruleset = Ruleset.build(policy, for: Self.layout)
        #expect(try accepted(ruleset, Arrival(input: "eth1", destination: Self.gateway)))
        let refused = [
            Arrival(input: "eth0", destination: Self.gateway),                    // the WAN, routed to the gateway address
            Arrival(input: "eth0", destination: IPv4Address(198, 51, 100, 2)),    // the WAN address
            Arrival(input: "tun0", destination: Self.gateway),                    // the tunnel
            Arrival(input: "tun0", destination: IPv4Address(10, 8, 0, 2)),
            Arrival(input: "eth1", destination: IPv4Address(10, 8, 0, 2)),        // the LAN, to the tunnel address
            Arrival(input: "eth1", destination: IPv4Address(198, 51, 100, 2)),    // the LAN, to the WAN address
            Arrival(input: "eth1", destination: Self.gateway, port: 9478),         // another port
            Arrival(input: "eth1", destination: Self.gateway, transport: .udp),    // UDP to the port
        ]
        for packet in refused {
            #expect(try !accepted(ruleset, packet), "\(packet)")
        }
    }

    @Test(arguments: [FirewallPolicy.connecting, .up])
    func withoutMetricsListenTheLANCannotReachThePort(_ policy: FirewallPolicy) throws {
        // The same packet the admission lets in is dropped without it: the evaluator can say no.
        #expect(try !accepted(Ruleset.build(policy, for: exampleLayout), Arrival(input: "eth1", destination: Self.gateway)))
    }

    @Test func theRuleIsOneTCPAcceptBeforeTheCountedDrop() throws {
        let input = try #require(Ruleset.build(.up, for: Self.layout).chain(.input))
        let admission = Rule([.inputInterface("eth1"), .destinationAddress(Self.gateway), .destinationPort(.tcp, 9477)], .accept)
        #expect(input.rules.filter { $0 == admission }.count == 1)
        #expect(input.rules.last == Rule([], counted: true, .drop))
        #expect(admission.nftText == #"iifname "eth1" ip daddr 172.22.0.1 tcp dport 9477 accept"#)
    }

    @Test func theLockdownAdmitsNothing() {
        #expect(Ruleset.build(.lockdown, for: Self.layout) == .lockdown, "the lockdown needs no configuration and takes none")
    }

    @Test func noGatewayNoRule() throws {
        var layout = Self.layout
        layout.lanGateway = nil
        let input = try #require(Ruleset.build(.up, for: layout).chain(.input))
        #expect(!input.rules.contains { $0.matches.contains(.destinationPort(.tcp, 9477)) })
    }
}
