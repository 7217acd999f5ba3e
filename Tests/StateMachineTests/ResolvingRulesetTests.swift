import StateMachine
import Testing

/// A packet as the filter chains see it: enough to evaluate the rules of the resolving ruleset.
private struct Packet: CustomStringConvertible {
    var hook: Chain.Hook
    var family: Match.Family = .ipv4
    var input: String?
    var output: String?
    var source = IPv4Address(0)
    var destination = IPv4Address(0)
    var transport: TransportProtocol? = .udp
    var destinationPort: UInt16 = 53
    var mark: UInt32 = 0
    var state: ConnectionStates = .new

    var description: String {
        "\(hook) \(family) in=\(input ?? "-") out=\(output ?? "-") \(source) -> \(destination) "
            + "\(transport.map { "\($0)" } ?? "icmp") dport \(destinationPort) mark \(mark) ct \(state.rawValue)"
    }
}

/// The verdict of `ruleset` for `packet`: the first accepting or dropping rule, else the policy.
/// Matches this evaluator does not know fail the test rather than guess.
private func accepts(_ ruleset: Ruleset, _ packet: Packet) -> Bool {
    guard let chain = ruleset.chains.first(where: { $0.hook == packet.hook && $0.kind == .filter }) else { return true }
    for rule in chain.rules {
        let matched = rule.matches.allSatisfy { match in
            switch match {
            case .inputInterface(let name): return packet.input == name
            case .outputInterface(let name): return packet.output == name
            case .family(let family): return packet.family == family
            case .sourceNetwork(let network): return packet.family == .ipv4 && network.contains(packet.source)
            case .destinationAddress(let address): return packet.family == .ipv4 && packet.destination == address
            case .destinationPort(let transport, let port): return packet.transport == transport && packet.destinationPort == port
            case .mark(let mark): return packet.mark == mark
            case .connectionState(let states): return !states.intersection(packet.state).isEmpty
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

@Suite struct ResolvingRulesetTests {
    let mark = Configuration.transportMark
    let nameservers = [IPv4Address(198, 51, 100, 1), IPv4Address(192, 0, 2, 53)]
    var ruleset: Ruleset { .resolving(nameservers: nameservers, wanInterface: "eth0", mark: mark) }

    @Test func forwardsNothing() {
        let forward = ruleset.chain(.forward)
        #expect(forward?.policy == .drop)
        #expect(forward?.rules == [Rule([], counted: true, .drop)])
        #expect(ruleset.chains.allSatisfy { $0.kind == .filter && $0.policy == .drop }, "no NAT, every chain drops")
    }

    @Test func letsOutOnlyMarkedDNSToTheNameservers() {
        // Every combination of the fields that matter, with the allowed value and wrong ones.
        let interfaces: [String?] = ["eth0", "eth1", "tun0", nil]
        let destinations = nameservers + [IPv4Address(203, 0, 113, 10), IPv4Address(198, 51, 100, 2)]
        let transports: [TransportProtocol?] = [.udp, .tcp, nil]
        let ports: [UInt16] = [53, 1194, 5353]
        let marks: [UInt32] = [mark, 0, mark ^ 1]
        let families: [Match.Family] = [.ipv4, .ipv6]
        var allowed = 0
        for output in interfaces {
            for destination in destinations {
                for transport in transports {
                    for port in ports {
                        for packetMark in marks {
                            for family in families {
                                let packet = Packet(hook: .output, family: family, output: output, destination: destination,
                                                    transport: transport, destinationPort: port, mark: packetMark)
                                let expected = output == "eth0" && family == .ipv4 && nameservers.contains(destination)
                                    && transport != nil && port == 53 && packetMark == mark
                                #expect(accepts(ruleset, packet) == expected, "\(packet)")
                                if expected { allowed += 1 }
                            }
                        }
                    }
                }
            }
        }
        #expect(allowed == nameservers.count * 2, "UDP and TCP to each nameserver")
        #expect(accepts(ruleset, Packet(hook: .output, output: "lo", destination: IPv4Address(127, 0, 0, 1))),
                "loopback stays open, as in the lockdown")
    }

    @Test func letsInOnlyRepliesFromTheNameservers() {
        for source in nameservers + [IPv4Address(203, 0, 113, 10)] {
            for state in [ConnectionStates.new, .established, .related, .invalid] {
                for input in ["eth0", "eth1"] {
                    let packet = Packet(hook: .input, input: input, source: source, state: state)
                    let expected = input == "eth0" && nameservers.contains(source) && (state == .established || state == .related)
                    #expect(accepts(ruleset, packet) == expected, "\(packet)")
                }
            }
        }
        #expect(!accepts(ruleset, Packet(hook: .input, family: .ipv6, input: "eth0", state: .established)))
    }

    @Test func loopbackAndRepeatedNameserversNeedNoRule() {
        let docker = Ruleset.resolving(nameservers: [IPv4Address(127, 0, 0, 11), IPv4Address(127, 0, 0, 53)],
                                       wanInterface: "eth0", mark: mark)
        #expect(docker == .resolving(nameservers: [], wanInterface: "eth0", mark: mark))
        // With no nameserver to reach through the WAN it is the lockdown, rule for rule.
        for hook in [Chain.Hook.input, .forward, .output] {
            #expect(docker.chain(hook)?.rules == Ruleset.lockdown.chain(hook)?.rules)
        }
        let twice = Ruleset.resolving(nameservers: nameservers + nameservers, wanInterface: "eth0", mark: mark)
        #expect(twice == ruleset)
    }

    @Test func nftText() {
        let text = ruleset.nftText
        #expect(text.contains("oifname \"eth0\" meta mark 0x76706e01 ip daddr 198.51.100.1 udp dport 53 accept"))
        #expect(text.contains("oifname \"eth0\" meta mark 0x76706e01 ip daddr 192.0.2.53 tcp dport 53 accept"))
        #expect(text.contains("iifname \"eth0\" ip saddr 198.51.100.1 ct state established,related accept"))
    }
}
