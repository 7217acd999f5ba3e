import Foundation
import PropertyBased
import StateMachine
import Testing

private func network(_ text: String) -> IPv4Network { IPv4Interface(text)!.network }
private func address(_ text: String) -> IPv4Address { IPv4Address(text)! }

@Suite struct OverlayAddressingTests {
    let flannel = try! OverlayAddressing(gateway: IPv4Interface("172.30.0.1/15")!, podNetworks: [network("10.244.0.0/16")])

    @Test func clientsTakeTheUpperHalfAtTheirPodOffset() {
        #expect(flannel.clientAddress(forPod: address("10.244.3.7"))?.description == "172.31.3.7/15")
        #expect(flannel.clientAddress(forPod: address("10.244.0.0"))?.description == "172.31.0.0/15")
        #expect(flannel.clientAddress(forPod: address("10.244.0.1"))?.description == "172.31.0.1/15")
        // The pod network's last address would be the overlay's broadcast: refused, not reused.
        #expect(flannel.clientAddress(forPod: address("10.244.255.255")) == nil)
        #expect(flannel.clientAddress(forPod: address("10.245.0.1")) == nil)  // not a pod
    }

    @Test func severalPodNetworksAreCountedInOrder() throws {
        let calico = try OverlayAddressing(gateway: IPv4Interface("100.64.0.1/16")!,
                                           podNetworks: [network("192.168.0.0/24"), network("192.168.8.0/22")])
        #expect(calico.clientAddress(forPod: address("192.168.0.9"))?.description == "100.64.128.9/16")
        #expect(calico.clientAddress(forPod: address("192.168.8.0"))?.description == "100.64.129.0/16")
        #expect(calico.clientAddress(forPod: address("192.168.11.255"))?.description == "100.64.132.255/16")
        #expect(calico.podAddress(forClient: address("100.64.129.0")) == address("192.168.8.0"))
        #expect(calico.podAddress(forClient: address("100.64.133.0")) == nil)  // past the last pod network
        #expect(calico.podAddress(forClient: address("100.64.0.1")) == nil)  // the gateway's half
    }

    @Test func theGatewayInvertsEveryClientAddress() async {
        await propertyCheck(count: 500, input: Gen.uint32(in: 0...UInt32.max)) { offset in
            let pod = IPv4Address(network("10.244.0.0/16").address.value + offset % 65536)
            guard let client = flannel.clientAddress(forPod: pod) else {
                #expect(pod == address("10.244.255.255"))
                return
            }
            #expect(flannel.podAddress(forClient: client.address) == pod)
            #expect(client.address != flannel.gateway.address)
            #expect(flannel.overlayNetwork.contains(client.address))
        }
    }

    @Test func layoutsThatCannotWorkAreRefused() {
        func problem(_ gateway: String, _ pods: [String]) -> String? {
            do {
                _ = try OverlayAddressing(gateway: IPv4Interface(gateway)!, podNetworks: pods.map(network))
                return nil
            } catch { return error.problem }
        }
        #expect(problem("172.30.0.1/16", ["10.244.0.0/16"])
                == "has room for 32768 client addresses in the upper half of 172.30.0.0/16, fewer than the 65536 pod addresses: use a prefix length of 15 or less")
        #expect(problem("172.31.0.1/15", ["10.244.0.0/16"])
                == "is in the upper half of 172.30.0.0/15, which belongs to client pods: use an address below 172.31.0.0")
        #expect(problem("10.244.0.1/15", ["10.244.0.0/16"])
                == "overlaps the pod network 10.244.0.0/16: the overlay must be a network of its own")
        #expect(problem("172.30.0.1/31", ["10.244.0.0/30"]) == "has a prefix length above 30, which leaves no upper half for client pods")
        #expect(problem("172.30.0.1/15", []) == "lists no network")
        #expect(problem("172.30.0.1/15", ["10.244.0.0/16"]) == nil)
    }

    @Test func macAddressesFollowTheOverlayAddress() {
        #expect(OverlayAddressing.macAddress(for: address("172.31.3.7")) == [0x02, 0x76, 172, 31, 3, 7])
    }

    @Test func networksOverlapWhenOneContainsTheOther() {
        #expect(network("10.0.0.0/8").overlaps(network("10.244.0.0/16")))
        #expect(network("10.244.0.0/16").overlaps(network("10.0.0.0/8")))
        #expect(!network("10.244.0.0/16").overlaps(network("10.245.0.0/16")))
        #expect(network("10.244.0.0/16").size == 65536)
    }
}

// MARK: - Configuration

private let validJoin: [String: String] = [
    "GATEWAY": "vpn-gateway.vpn.svc.cluster.local", "GATEWAY_ADDR": "172.30.0.1/15",
    "POD_CIDRS": "10.244.0.0/16", "CLUSTER_CIDRS": "10.96.0.0/12,192.168.50.0/24", "CLUSTER_DNS": "10.96.0.10",
]

@Suite struct JoinConfigurationTests {
    @Test func readsAValidEnvironmentWithDefaults() throws {
        let configuration = try JoinConfiguration(validJoin)
        #expect(configuration.gateway == .name("vpn-gateway.vpn.svc.cluster.local"))
        #expect(configuration.settings == OverlaySettings(vni: 30320, port: 4789, podNetworks: [network("10.244.0.0/16")]))
        #expect(configuration.clusterNetworks.map(\.description) == ["10.244.0.0/16", "10.96.0.0/12", "192.168.50.0/24"])
        #expect(configuration.clusterDNS == address("10.96.0.10"))
        #expect(configuration.clusterDomain == "cluster.local")
        #expect(configuration.overlayInterface == "vxlan0" && configuration.underlayInterface == "eth0")
        #expect(configuration.runtimeDirectory == "/run/vpnsup")
        #expect(configuration.addressing.clientAddress(forPod: address("10.244.1.4"))?.description == "172.31.1.4/15")

        var literal = validJoin
        literal["GATEWAY"] = "10.244.2.9"
        literal["OVERLAY_VNI"] = "16777215"
        literal["OVERLAY_PORT"] = "8472"
        literal["CLUSTER_DOMAIN"] = "k8s.example."
        literal["CLUSTER_DNS"] = ""  // empty counts as unset: the pod's resolv.conf names it
        let other = try JoinConfiguration(literal)
        #expect(other.gateway == .address(address("10.244.2.9")))
        #expect(other.settings.vni == 16_777_215 && other.settings.port == 8472)
        #expect(other.clusterDomain == "k8s.example" && other.clusterDNS == nil)
    }

    /// Every refusal is one line naming the variable and the value.
    @Test(arguments: [
        ("GATEWAY", "", "GATEWAY= is required: the gateway's headless Service name, e.g. vpn-gateway.vpn.svc.cluster.local"),
        ("GATEWAY", "vpn gateway", "GATEWAY=vpn gateway is neither a DNS name nor an IPv4 address"),
        ("GATEWAY", "192.0.2.1", "GATEWAY=192.0.2.1 is outside POD_CIDRS: the overlay is carried to pods only"),
        ("GATEWAY_ADDR", "", "GATEWAY_ADDR= is required: the gateway's overlay address with prefix length (its IP_ADDR), e.g. 172.30.0.1/15"),
        ("GATEWAY_ADDR", "172.30.0.1", "GATEWAY_ADDR=172.30.0.1 is not an IPv4 address with prefix length"),
        ("GATEWAY_ADDR", "172.30.0.0/15", "GATEWAY_ADDR=172.30.0.0/15 is the network or broadcast address of its subnet"),
        ("GATEWAY_ADDR", "172.30.0.1/16", "GATEWAY_ADDR=172.30.0.1/16 has room for 32768 client addresses in the upper half of 172.30.0.0/16, fewer than the 65536 pod addresses: use a prefix length of 15 or less"),
        ("GATEWAY_ADDR", "10.100.0.1/15", "GATEWAY_ADDR=10.100.0.1/15 overlaps the cluster network 10.96.0.0/12: the overlay must be a network of its own"),
        ("POD_CIDRS", "", "POD_CIDRS= is required: the cluster's pod networks, e.g. 10.244.0.0/16"),
        ("POD_CIDRS", "10.244.0.1/16", "POD_CIDRS=10.244.0.1/16 has '10.244.0.1/16', which has host bits set (the network is 10.244.0.0/16)"),
        ("POD_CIDRS", "10.244.0.0/16,10.244.8.0/24", "POD_CIDRS=10.244.0.0/16,10.244.8.0/24 has '10.244.8.0/24', which overlaps 10.244.0.0/16"),
        ("POD_CIDRS", "0.0.0.0/0", "POD_CIDRS=0.0.0.0/0 has '0.0.0.0/0', which would make every address cluster-internal"),
        ("POD_CIDRS", "pods", "POD_CIDRS=pods has 'pods', which is not an IPv4 network such as 10.244.0.0/16"),
        ("POD_CIDRS", ",", "POD_CIDRS=, lists no network"),
        ("CLUSTER_CIDRS", "", "CLUSTER_CIDRS= is required: the service and node networks, e.g. 10.96.0.0/12,192.168.1.0/24"),
        ("CLUSTER_CIDRS", "10.0.0.0/8", "CLUSTER_CIDRS=10.0.0.0/8 has 10.0.0.0/8, which overlaps POD_CIDRS"),
        ("CLUSTER_DNS", "kube-dns", "CLUSTER_DNS=kube-dns is not an IPv4 address"),
        ("CLUSTER_DNS", "8.8.8.8", "CLUSTER_DNS=8.8.8.8 is outside POD_CIDRS and CLUSTER_CIDRS: the cluster resolver is reached directly"),
        ("CLUSTER_DOMAIN", "cluster..local", "CLUSTER_DOMAIN=cluster..local is not a DNS name"),
        ("OVERLAY_VNI", "0", "OVERLAY_VNI=0 is not a VXLAN network identifier in 1...16777215"),
        ("OVERLAY_VNI", "16777216", "OVERLAY_VNI=16777216 is not a VXLAN network identifier in 1...16777215"),
        ("OVERLAY_PORT", "65536", "OVERLAY_PORT=65536 is not a UDP port in 1...65535"),
        ("OVERLAY_PORT", "-1", "OVERLAY_PORT=-1 is not a UDP port in 1...65535"),
        ("OVERLAY_IF", "eth0", "OVERLAY_IF=eth0 is the same interface as UNDERLAY_IF"),
        ("UNDERLAY_IF", "a/b", "UNDERLAY_IF=a/b is not an interface name: no '/', ':', spaces or control characters"),
        ("RUNTIME_DIR", "run", "RUNTIME_DIR=run is not an absolute path"),
    ])
    func refusesWithOneLine(variable: String, value: String, message: String) {
        var values = validJoin
        values[variable] = value
        let error = #expect(throws: ConfigurationError.self) { try JoinConfiguration(values) }
        #expect(error?.description == message)
        #expect(error?.variable == variable)
        #expect(error?.description.contains("\n") == false)
    }

    @Test func theGatewayAddressMustBeAPod() throws {
        let configuration = try JoinConfiguration(validJoin)
        #expect(configuration.refusal(ofGatewayAddress: address("10.244.7.2")) == nil)
        #expect(configuration.refusal(ofGatewayAddress: address("203.0.113.9"))
                == "GATEWAY=vpn-gateway.vpn.svc.cluster.local resolved to 203.0.113.9, outside POD_CIDRS: not following it")
    }
}

@Suite struct GatewayOverlayTests {
    let router: [String: String] = ["CONFIG": "provider.ovpn", "IP_ADDR": "172.30.0.1/15", "LAN_IF": "vxlan0", "DNS": "10.8.0.1"]

    @Test func noPodNetworksNoOverlay() throws {
        #expect(try GatewayOverlay(router, router: Configuration(router)) == nil)
    }

    @Test func theOverlayIsLANOverWAN() throws {
        var values = router
        values["POD_CIDRS"] = "10.244.0.0/16"
        values["OVERLAY_PORT"] = "8472"
        let overlay = try #require(try GatewayOverlay(values, router: Configuration(values)))
        #expect(overlay.interface == "vxlan0" && overlay.underlay == "eth0")
        #expect(overlay.underlayTraffic == OverlayUnderlay(interface: "eth0", peers: [network("10.244.0.0/16")], port: 8472))
    }

    @Test func theRoutersAddressMustLeaveRoomForThePods() throws {
        var values = router
        values["POD_CIDRS"] = "10.244.0.0/16"
        values["IP_ADDR"] = "172.30.0.1/24"
        let error = #expect(throws: ConfigurationError.self) { try GatewayOverlay(values, router: Configuration(values)) }
        #expect(error?.description == "IP_ADDR=172.30.0.1/24 has room for 128 client addresses in the upper half of 172.30.0.0/24, fewer than the 65536 pod addresses: use a prefix length of 15 or less")
        values["IP_ADDR"] = "10.244.0.1/15"
        let overlap = #expect(throws: ConfigurationError.self) { try GatewayOverlay(values, router: Configuration(values)) }
        #expect(overlap?.variable == "IP_ADDR")
    }
}

// MARK: - Rulesets

/// A packet as the filter chains see it.
private struct Packet: CustomStringConvertible {
    var hook: Chain.Hook
    var input = "", output = ""
    var family = Match.Family.ipv4
    var source = IPv4Address(0), destination = IPv4Address(0)
    var transport: TransportProtocol? = .udp
    var port: UInt16 = 0
    var mark: UInt32 = 0
    var destinationNATed = false

    var description: String { "\(hook) \(family) \(input)->\(output) \(source)->\(destination) \(transport?.rawValue ?? "-"):\(port) mark \(mark)" }
}

/// The verdict of the filter chain on `packet`'s hook (true: accepted). Matches it does not know
/// fail the test rather than guess.
private func accepts(_ ruleset: Ruleset, _ packet: Packet) -> Bool {
    guard let chain = ruleset.chains.first(where: { $0.hook == packet.hook && $0.kind == .filter }) else { return true }
    for rule in chain.rules {
        let matched = rule.matches.allSatisfy { match in
            switch match {
            case .inputInterface(let name): return packet.input == name
            case .outputInterface(let name): return packet.output == name
            case .family(let family): return packet.family == family
            case .sourceNetwork(let network): return packet.family == .ipv4 && network.contains(packet.source)
            case .destinationNetwork(let network): return packet.family == .ipv4 && network.contains(packet.destination)
            case .destinationAddress(let address): return packet.family == .ipv4 && packet.destination == address
            case .notDestinationAddress(let address): return packet.family == .ipv4 && packet.destination != address
            case .destinationPort(let transport, let port): return packet.transport == transport && packet.port == port
            case .mark(let mark): return packet.mark == mark
            case .destinationNATed: return packet.destinationNATed
            case .connectionState, .neighbourDiscovery, .protocolICMP, .tcpSYN:
                return false  // the packets here are new and not ICMP
            }
        }
        guard matched else { continue }
        switch rule.action {
        case .accept: return true
        case .drop: return false
        default: continue  // statements (MSS clamp) do not decide
        }
    }
    return chain.policy == .accept
}

@Suite struct GatewayOverlayRulesetTests {
    static let layout = NetworkLayout(lanInterface: "vxlan0", wanInterface: "eth0", tunnelInterface: "tun0",
                                      endpoints: [Endpoint(address: IPv4Address(198, 51, 100, 1), port: 1194, transport: .udp)],
                                      transportMark: Configuration.transportMark, dns: IPv4Address(10, 8, 0, 1),
                                      lanGateway: IPv4Address(172, 30, 0, 1))
    static let overlay = OverlayUnderlay(interface: "eth0", peers: [network("10.244.0.0/16"), network("10.250.0.0/24")], port: 4789)

    @Test(arguments: [FirewallPolicy.connecting, .up])
    func theOverlayIsAdmittedBeforeEachClosingDrop(policy: FirewallPolicy) {
        let plain = Ruleset.build(policy, for: Self.layout)
        let ruleset = Ruleset.build(policy, for: Self.layout, overlay: Self.overlay)
        #expect(ruleset.chains.map(\.name) == plain.chains.map(\.name))
        let incoming = ["iifname \"eth0\" ip saddr 10.244.0.0/16 udp dport 4789 accept",
                        "iifname \"eth0\" ip saddr 10.250.0.0/24 udp dport 4789 accept"]
        let outgoing = ["oifname \"eth0\" ip daddr 10.244.0.0/16 udp dport 4789 accept",
                        "oifname \"eth0\" ip daddr 10.250.0.0/24 udp dport 4789 accept"]
        for (name, added) in [("input", incoming), ("output", outgoing), ("egress", outgoing)] {
            let before = plain.chains.first { $0.name == name }!.rules.map(\.nftText)
            let after = ruleset.chains.first { $0.name == name }!.rules.map(\.nftText)
            #expect(after == before.dropLast() + added + [before.last!], "\(name)")
        }
        // Everything else is the router's ruleset unchanged.
        for chain in plain.chains where !["input", "output", "egress"].contains(chain.name) {
            #expect(ruleset.chains.first { $0.name == chain.name } == chain)
        }
    }

    @Test func theLockdownAdmitsNoOverlay() {
        #expect(Ruleset.build(.lockdown, for: Self.layout, overlay: Self.overlay) == .lockdown)
    }

    /// What may leave by the pod's eth0: OpenVPN's marked transport to the endpoint, and UDP to
    /// the overlay port of a pod network; nothing else, whatever its address, port or mark.
    @Test func theWANCarriesTransportAndOverlayOnly() {
        let ruleset = Ruleset.build(.up, for: Self.layout, overlay: Self.overlay)
        let addresses = ["10.244.3.7", "10.250.0.9", "10.251.0.9", "198.51.100.1", "203.0.113.10", "10.96.0.10"].map(address)
        for destination in addresses {
            for transport in [TransportProtocol.udp, .tcp] {
                for port: UInt16 in [53, 1194, 4789] {
                    for mark in [UInt32(0), Configuration.transportMark] {
                        let packet = Packet(hook: .postrouting, output: "eth0", destination: destination,
                                            transport: transport, port: port, mark: mark)
                        let transportAllowed = mark == Configuration.transportMark && destination == address("198.51.100.1")
                            && transport == .udp && port == 1194
                        let overlayAllowed = transport == .udp && port == 4789 && Self.overlay.peers.contains { $0.contains(destination) }
                        #expect(accepts(ruleset, packet) == (transportAllowed || overlayAllowed), "\(packet)")
                        var output = packet
                        output.hook = .output
                        #expect(accepts(ruleset, output) == (transportAllowed || overlayAllowed), "\(output)")
                    }
                }
            }
        }
        // In: the overlay from pods only.
        let fromPod = Packet(hook: .input, input: "eth0", source: address("10.244.3.7"), port: 4789)
        #expect(accepts(ruleset, fromPod))
        var fromOutside = fromPod
        fromOutside.source = address("203.0.113.10")
        #expect(!accepts(ruleset, fromOutside))
        var otherPort = fromPod
        otherPort.port = 4790
        #expect(!accepts(ruleset, otherPort))
        // The inner traffic still goes into the tunnel only.
        let inner = Packet(hook: .forward, input: "vxlan0", output: "eth0", destination: address("203.0.113.10"), port: 80)
        #expect(!accepts(ruleset, inner))
        var intoTunnel = inner
        intoTunnel.output = "tun0"
        #expect(accepts(ruleset, intoTunnel))
    }
}

@Suite struct ClientKillSwitchTests {
    static let killSwitch = try! JoinConfiguration(validJoin).killSwitch(clusterDNS: IPv4Address(10, 96, 0, 10))

    @Test func theRulesetInNftSyntax() {
        #expect(Self.killSwitch.ruleset.nftText == """
            table inet vpnsup {
            \tchain nat_output {
            \t\ttype nat hook output priority -100; policy accept;
            \t\tmeta mark 0x76706e02 accept
            \t\tip daddr != 127.0.0.1 udp dport 53 dnat ip to 127.0.0.1
            \t\tip daddr != 127.0.0.1 tcp dport 53 dnat ip to 127.0.0.1
            \t}

            \tchain forward {
            \t\ttype filter hook forward priority 0; policy drop;
            \t\tcounter drop
            \t}

            \tchain output {
            \t\ttype filter hook output priority 0; policy drop;
            \t\toifname "lo" accept
            \t\tct status dnat ip daddr 127.0.0.1 udp dport 53 accept
            \t\tct status dnat ip daddr 127.0.0.1 tcp dport 53 accept
            \t\toifname "eth0" meta mark 0x76706e02 ip daddr 10.96.0.10 udp dport 53 accept
            \t\toifname "eth0" meta mark 0x76706e02 ip daddr 10.96.0.10 tcp dport 53 accept
            \t\tip daddr 10.96.0.10 udp dport 53 counter drop
            \t\tip daddr 10.96.0.10 tcp dport 53 counter drop
            \t\toifname "eth0" ip daddr 10.244.0.0/16 accept
            \t\toifname "eth0" ip daddr 10.96.0.0/12 accept
            \t\toifname "eth0" ip daddr 192.168.50.0/24 accept
            \t\tmeta nfproto ipv4 oifname "vxlan0" accept
            \t\tcounter drop
            \t}
            }

            """)
    }

    /// The property the pod relies on: by eth0 only cluster addresses, whatever the port or mark
    /// (the cluster resolver on port 53 only from the marked forwarder); by the overlay any IPv4;
    /// IPv6 nowhere but loopback; by any other interface nothing.
    @Test func nothingButClusterTrafficLeavesByTheUnderlay() async {
        let ruleset = Self.killSwitch.ruleset
        let cluster = Self.killSwitch.clusterNetworks
        await propertyCheck(count: 500, input: Gen.uint32(in: 0...UInt32.max), Gen.uint16(in: 0...UInt16.max), Gen.bool,
                            Gen.uint32(in: 0...UInt32.max)) { raw, rawPort, marked, choice in
            // Half the addresses inside the cluster's networks, half anywhere.
            let destination = choice % 2 == 0 ? IPv4Address(raw)
                : IPv4Address(cluster[Int(choice / 2) % cluster.count].address.value | raw % 4096)
            let port: UInt16 = choice % 3 == 0 ? 53 : rawPort
            let transport: TransportProtocol = choice % 5 == 0 ? .tcp : .udp
            let mark = marked ? ClientKillSwitch.DNSForwarding.defaultMark : 0
            for output in ["eth0", "vxlan0", "eth1", "lo"] {
                for family in [Match.Family.ipv4, .ipv6] {
                    let packet = Packet(hook: .output, output: output, family: family, destination: destination,
                                        transport: transport, port: port, mark: mark)
                    let toResolver = destination == IPv4Address(10, 96, 0, 10) && port == 53
                    let expected: Bool = switch (output, family) {
                    case ("lo", _): true
                    case ("eth0", .ipv4): cluster.contains { $0.contains(destination) } && (!toResolver || marked)
                    case ("vxlan0", .ipv4): !toResolver
                    default: false
                    }
                    #expect(accepts(ruleset, packet) == expected, "\(packet)")
                }
            }
        }
        #expect(!accepts(ruleset, Packet(hook: .forward, input: "eth0", output: "vxlan0", destination: IPv4Address(203, 0, 113, 10))))
    }
}
