import StateMachine
import Testing

@Suite struct JoinPlanTests {
    let configuration = try! JoinConfiguration(joinValues)

    private func setup(pod: IPv4Address, dns: IPv4Address = IPv4Address(10, 96, 0, 10), fromResolvConf: Bool = true) -> JoinSetup {
        JoinSetup(configuration: configuration, clusterDNS: dns, clusterDNSFromResolvConf: fromResolvConf, podAddress: pod)
    }

    @Test func thePodsOverlayLinkRoutesAndDNSFollowFromItsAddress() throws {
        let plan = try JoinPlan(setup(pod: IPv4Address(10, 244, 3, 7)))
        #expect(plan.overlayAddress == IPv4Interface("172.31.3.7/15"))
        #expect(plan.gatewayOverlayAddress == IPv4Address(172, 30, 0, 1))
        let link = plan.link(towards: IPv4Address(10, 244, 1, 20))
        #expect(link == OverlayLink(name: "vxlan0", vni: 30320, port: 4789, underlay: "eth0", local: IPv4Address(10, 244, 3, 7),
                                    remote: IPv4Address(10, 244, 1, 20), learning: false,
                                    macAddress: [0x02, 0x76, 172, 31, 3, 7], address: IPv4Interface("172.31.3.7/15")))
        #expect(plan.routes == JoinRoutes(underlay: "eth0",
                                          clusterNetworks: ["10.244.0.0/16", "10.96.0.0/12", "192.168.50.0/24"].map { IPv4Interface($0)!.network },
                                          overlay: "vxlan0", gateway: IPv4Address(172, 30, 0, 1)))
        #expect(plan.killSwitch == configuration.killSwitch(clusterDNS: IPv4Address(10, 96, 0, 10)))
        #expect(plan.splitDNS.clusterResolver == IPv4Address(10, 96, 0, 10))
        #expect(plan.splitDNS.gateway == IPv4Address(172, 30, 0, 1))
    }

    @Test func aPodOutsidePodCIDRsOrOnTheBroadcastIsRefusedNamingTheVariable() {
        #expect(throws: ConfigurationError("POD_CIDRS", "10.244.0.0/16", "does not hold this pod's address 10.245.0.9 (eth0)")) {
            try JoinPlan(setup(pod: IPv4Address(10, 245, 0, 9)))
        }
        #expect(throws: ConfigurationError("POD_CIDRS", "10.244.0.0/16",
                                           "ends at this pod's address 10.244.255.255, whose overlay address would be the overlay's broadcast address")) {
            try JoinPlan(setup(pod: IPv4Address(10, 244, 255, 255)))
        }
    }

    @Test func resolvConfsNameserverMustBeTheClusters() throws {
        #expect(throws: ConfigurationError("CLUSTER_DNS", "", "is unset and the pod's resolv.conf names 8.8.8.8, outside POD_CIDRS and CLUSTER_CIDRS: set CLUSTER_DNS to the cluster resolver")) {
            try JoinPlan(setup(pod: IPv4Address(10, 244, 1, 10), dns: IPv4Address(8, 8, 8, 8)))
        }
        // A CLUSTER_DNS of the configuration was checked where it was read.
        _ = try JoinPlan(setup(pod: IPv4Address(10, 244, 1, 10), dns: IPv4Address(10, 96, 0, 10), fromResolvConf: false))
    }

    @Test func theGatewaysLinkLearnsAndKeepsItsClients() throws {
        let router = try Configuration(["CONFIG": "/config/client.ovpn", "IP_ADDR": "172.30.0.1/15", "LAN_IF": "vxlan0",
                                        "WAN_IF": "eth0", "POD_CIDRS": "10.244.0.0/16", "OVERLAY_VNI": "42", "OVERLAY_PORT": "4790"])
        let link = try #require(router.overlay?.link)
        #expect(link == OverlayLink(name: "vxlan0", vni: 42, port: 4790, underlay: "eth0", local: nil, remote: nil, learning: true,
                                    ageing: 432_000, macAddress: [0x02, 0x76, 172, 30, 0, 1], address: nil))
    }
}

@Suite struct RunConfigurationOverlayTests {
    private let base = ["CONFIG": "/config/client.ovpn", "IP_ADDR": "172.30.0.1/15", "LAN_IF": "vxlan0", "WAN_IF": "eth0"]

    @Test func podCIDRsTurnTheOverlayOnAndItsRulesetAdmitsTheOverlayOnTheWAN() throws {
        #expect(try Configuration(base).overlay == nil)
        let configuration = try Configuration(base.merging(["POD_CIDRS": "10.244.0.0/16"]) { $1 })
        let overlay = try #require(configuration.overlay)
        #expect(overlay.interface == "vxlan0" && overlay.underlay == "eth0")
        let endpoint = [Endpoint(address: IPv4Address(192, 0, 2, 1), port: 1194, transport: .udp)]
        for policy in [FirewallPolicy.connecting, .up] {
            let text = configuration.ruleset(policy, endpoints: endpoint).nftText
            #expect(text.contains("iifname \"eth0\" ip saddr 10.244.0.0/16 udp dport 4789 accept"), "\(policy)")
            #expect(text.contains("oifname \"eth0\" ip daddr 10.244.0.0/16 udp dport 4789 accept"), "\(policy)")
            #expect(text == Ruleset.build(policy, for: configuration.layout(endpoints: endpoint), overlay: overlay.underlayTraffic).nftText)
        }
        // Before the configuration and after giving up: loopback only, the overlay closed too.
        #expect(configuration.ruleset(.lockdown, endpoints: endpoint) == .lockdown)
        #expect(try Configuration(base).ruleset(.up, endpoints: endpoint) == Ruleset.build(.up, for: Configuration(base).layout(endpoints: endpoint)))
    }

    @Test func badOverlaySettingsNameTheirVariable() {
        let cases: [([String: String], ConfigurationError)] = [
            (["POD_CIDRS": "10.244.0.0/33"], ConfigurationError("POD_CIDRS", "10.244.0.0/33", "has '10.244.0.0/33', which is not an IPv4 network such as 10.244.0.0/16")),
            (["POD_CIDRS": "10.244.0.0/16", "OVERLAY_VNI": "0"], ConfigurationError("OVERLAY_VNI", "0", "is not a VXLAN network identifier in 1...16777215")),
            (["POD_CIDRS": "10.244.0.0/16", "OVERLAY_PORT": "70000"], ConfigurationError("OVERLAY_PORT", "70000", "is not a UDP port in 1...65535")),
            (["POD_CIDRS": "10.244.0.0/16", "IP_ADDR": "172.31.0.1/15"],
             ConfigurationError("IP_ADDR", "172.31.0.1/15", "is in the upper half of 172.30.0.0/15, which belongs to client pods: use an address below 172.31.0.0")),
        ]
        for (values, error) in cases {
            #expect(throws: error) { try Configuration(base.merging(values) { $1 }) }
        }
    }
}

@Suite struct SplitDNSTests {
    let split = SplitDNS(clusterDomain: "Cluster.Local.", clusterResolver: IPv4Address(10, 96, 0, 10),
                         gateway: IPv4Address(172, 30, 0, 1),
                         clusterNetworks: ["10.244.0.0/16", "10.96.0.0/12"].map { IPv4Interface($0)!.network })

    @Test func clusterNamesAndTheClustersReverseZonesGoToTheClusterResolver() {
        for name in ["cluster.local", "web.apps.svc.cluster.local", "WEB.Apps.SVC.Cluster.Local.", "7.3.244.10.in-addr.arpa",
                     "10.0.96.10.in-addr.arpa"] {
            #expect(split.upstream(for: name) == .cluster, "\(name)")
        }
        // Everything else, through the gateway and its tunnel: internet names, names that only end
        // like the domain, reverse names of other addresses, partial reverse names.
        for name in ["echo.lab", "example.com", "notcluster.local", "cluster.local.evil.com", "8.8.8.8.in-addr.arpa",
                     "244.10.in-addr.arpa", "x.3.244.10.in-addr.arpa", "300.3.244.10.in-addr.arpa", ""] {
            #expect(split.upstream(for: name) == .gateway, "\(name)")
        }
        #expect(split.address(of: .cluster) == IPv4Address(10, 96, 0, 10))
        #expect(split.address(of: .gateway) == IPv4Address(172, 30, 0, 1))
    }

    private func query(_ labels: [String], flags: UInt16 = 0x0100, questions: UInt16 = 1) -> [UInt8] {
        var bytes: [UInt8] = [0x12, 0x34, UInt8(flags >> 8), UInt8(flags & 0xff), UInt8(questions >> 8), UInt8(questions & 0xff), 0, 0, 0, 0, 0, 0]
        for label in labels { bytes += [UInt8(label.utf8.count)] + Array(label.utf8) }
        return bytes + [0, 0, 1, 0, 1]
    }

    @Test func theQuestionsNameIsReadFromTheQueryAndRouted() {
        #expect(SplitDNS.questionName(in: query(["web", "apps", "svc", "cluster", "local"])) == "web.apps.svc.cluster.local")
        #expect(split.upstreamAddress(forQuery: query(["web", "apps", "svc", "cluster", "local"])) == IPv4Address(10, 96, 0, 10))
        #expect(split.upstreamAddress(forQuery: query(["Echo", "LAB"])) == IPv4Address(172, 30, 0, 1))
        #expect(SplitDNS.questionName(in: query([])) == "")
    }

    @Test func whatIsNotAPlainQueryIsDropped() {
        // A response (QR), another opcode, no question, a truncated name, a compression pointer,
        // a label longer than 63, and a label holding a dot (it would read as cluster.local
        // without being in it, and the cluster resolver would send it upstream outside the tunnel).
        #expect(SplitDNS.questionName(in: query(["a"], flags: 0x8100)) == nil)
        #expect(SplitDNS.questionName(in: query(["a"], flags: 0x2800)) == nil)
        #expect(SplitDNS.questionName(in: query(["a"], questions: 0)) == nil)
        #expect(SplitDNS.questionName(in: Array(query(["abc"]).prefix(14))) == nil)
        #expect(SplitDNS.questionName(in: Array(query([]).prefix(12)) + [0xc0, 0x0c]) == nil)
        #expect(SplitDNS.questionName(in: query([String(repeating: "a", count: 64)])) == nil)
        #expect(split.upstreamAddress(forQuery: query(["evil", "x.cluster.local"])) == nil)
        #expect(SplitDNS.questionName(in: [0x12]) == nil)
    }
}
