import Testing
@testable import StateMachine

/// What a LAN host can reach on the router itself: its gateway address (ICMP only), nothing else;
/// the tunnel and WAN addresses not at all (the CVE-2019-14899 class).
@Suite("Router exposure to the LAN")
struct RouterExposureTests {
    static let policies: [FirewallPolicy] = [.connecting, .up]

    @Test(arguments: policies)
    func lanPacketsToOtherRouterAddressesDropBeforeConntrack(_ policy: FirewallPolicy) throws {
        let input = try #require(Ruleset.build(policy, for: exampleLayout).chains.first { $0.name == "input" })
        let guardRule = Rule([.inputInterface("eth1"), .notDestinationAddress(IPv4Address(172, 22, 0, 1))],
                             counted: true, .drop)
        let guardIndex = try #require(input.rules.firstIndex(of: guardRule))
        let conntrackIndex = try #require(input.rules.firstIndex { $0.matches.contains(.connectionState([.established, .related])) })
        #expect(guardIndex < conntrackIndex)
        #expect(input.policy == .drop)
    }

    @Test(arguments: policies)
    func lanHostsGetOnlyICMPAndNeighbourDiscoveryAccepted(_ policy: FirewallPolicy) throws {
        let input = try #require(Ruleset.build(policy, for: exampleLayout).chains.first { $0.name == "input" })
        let lanAccepts = input.rules.filter { $0.action == .accept && $0.matches.contains(.inputInterface("eth1")) }
        #expect(!lanAccepts.isEmpty)
        for rule in lanAccepts {
            let allowed = rule.matches.contains(.protocolICMP)
                || rule.matches.contains { if case .neighbourDiscovery = $0 { true } else { false } }
            #expect(allowed, "LAN accept rule \(rule.nftText) is neither ICMP nor neighbour discovery")
        }
    }

    @Test func withoutAGatewayThereIsNoGuardRule() throws {
        var layout = exampleLayout
        layout.lanGateway = nil
        let input = try #require(Ruleset.build(.up, for: layout).chains.first { $0.name == "input" })
        #expect(!input.rules.contains { $0.matches.contains { if case .notDestinationAddress = $0 { true } else { false } } })
    }
}
