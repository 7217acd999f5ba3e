import Foundation
import Glibc
import StateMachine
import Testing
import TestSupport
@testable import Actions

// MARK: - Fixtures

private func network(_ text: String) -> IPv4Network { IPv4Interface(text)!.network }
private func address(_ text: String) -> IPv4Address { IPv4Address(text)! }

/// Every Match kind, every action, every hook, both chain kinds, counted and uncounted rules.
/// Loopback is accepted in input and output so tests running alongside in the same namespace
/// keep their 127.0.0.1 traffic.
private let everyMatch = Ruleset(chains: [
    Chain(name: "prerouting", kind: .filter, hook: .prerouting, priority: -150, policy: .accept, rules: [
        Rule([.mark(0xdead)], counted: true, .drop),
    ]),
    Chain(name: "input", kind: .filter, hook: .input, priority: 0, policy: .drop, rules: [
        Rule([.inputInterface("lo")], .accept),
        Rule([.connectionState([.established, .related])], .accept),
        Rule([.connectionState([.invalid])], counted: true, .drop),
        Rule([.family(.ipv6)], .drop),
        Rule([.inputInterface("eth1"), .sourceNetwork(network("172.22.0.1/24")), .protocolICMP], .accept),
        Rule([.family(.ipv4), .sourceNetwork(network("10.0.0.0/20"))], .drop),
        Rule([.sourceNetwork(network("192.0.2.7/32")), .destinationAddress(address("192.0.2.1"))], .accept),
        Rule([.destinationPort(.tcp, 22)], counted: true, .accept),
    ]),
    Chain(name: "forward", kind: .filter, hook: .forward, priority: 0, policy: .drop, rules: [
        Rule([.inputInterface("eth1"), .outputInterface("tun0")], .accept),
        Rule([.inputInterface("tun0"), .outputInterface("eth1"), .connectionState([.established, .related])], .accept),
        Rule([], counted: true, .drop),
    ]),
    Chain(name: "output", kind: .filter, hook: .output, priority: 0, policy: .drop, rules: [
        Rule([.outputInterface("lo")], .accept),
        Rule([.outputInterface("eth0"), .mark(0x1234), .destinationAddress(address("192.0.2.1")),
              .destinationPort(.udp, 1194)], .accept),
        Rule([.outputInterface("eth1"), .connectionState([.established, .related, .new, .untracked])], .accept),
        Rule([], counted: true, .drop),
    ]),
    Chain(name: "postrouting", kind: .nat, hook: .postrouting, priority: 100, policy: .accept, rules: [
        Rule([.outputInterface("tun0")], .masquerade),
    ]),
])

/// What `nft list table inet vpnsup` prints for `everyMatch` (counters normalised to `counter`).
/// `meta nfproto ipv4 ip saddr ...` lists as `ip saddr ...`: nft folds the explicit family match
/// into the dependency it would have added itself, and so does the translation.
private let everyMatchListing = """
    table inet vpnsup {
    \tchain prerouting {
    \t\ttype filter hook prerouting priority mangle; policy accept;
    \t\tmeta mark 0x0000dead counter drop
    \t}

    \tchain input {
    \t\ttype filter hook input priority filter; policy drop;
    \t\tiifname "lo" accept
    \t\tct state established,related accept
    \t\tct state invalid counter drop
    \t\tmeta nfproto ipv6 drop
    \t\tiifname "eth1" ip saddr 172.22.0.0/24 meta l4proto icmp accept
    \t\tip saddr 10.0.0.0/20 drop
    \t\tip saddr 192.0.2.7 ip daddr 192.0.2.1 accept
    \t\ttcp dport 22 counter accept
    \t}

    \tchain forward {
    \t\ttype filter hook forward priority filter; policy drop;
    \t\tiifname "eth1" oifname "tun0" accept
    \t\tiifname "tun0" oifname "eth1" ct state established,related accept
    \t\tcounter drop
    \t}

    \tchain output {
    \t\ttype filter hook output priority filter; policy drop;
    \t\toifname "lo" accept
    \t\toifname "eth0" meta mark 0x00001234 ip daddr 192.0.2.1 udp dport 1194 accept
    \t\toifname "eth1" ct state established,related,new,untracked accept
    \t\tcounter drop
    \t}

    \tchain postrouting {
    \t\ttype nat hook postrouting priority srcnat; policy accept;
    \t\toifname "tun0" masquerade
    \t}
    }

    """

private let layout = NetworkLayout(lanInterface: "eth1", wanInterface: "eth0", tunnelInterface: "tun0",
                                   endpoints: [Endpoint(address: address("198.51.100.7"), port: 1194, transport: .udp),
                                               Endpoint(address: address("203.0.113.9"), port: 443, transport: .tcp)],
                                   transportMark: 0x5650)

// MARK: - Translation (no kernel needed)

@Suite("Firewall: translation to nft bytecode")
struct FirewallTranslationTests {
    /// The expressions of a one-match accept rule, without the verdict, as nft --debug=netlink prints them.
    private func bytecode(_ matches: [Match]) throws -> [String] {
        try NftTranslator.expressions(for: Rule(matches, .accept)).dropLast().map(\.description)
    }

    // The expected lines were printed by `nft --debug=netlink -f` (nftables 1.0.6) for the nft text
    // of each match, in an inet table.

    @Test func interfaces() throws {
        #expect(try bytecode([.inputInterface("eth1")]) == [
            "[ meta load iifname => reg 1 ]",
            "[ cmp eq reg 1 0x31687465 0x00000000 0x00000000 0x00000000 ]",
        ])
        #expect(try bytecode([.outputInterface("tun0")]) == [
            "[ meta load oifname => reg 1 ]",
            "[ cmp eq reg 1 0x306e7574 0x00000000 0x00000000 0x00000000 ]",
        ])
    }

    @Test func connectionState() throws {
        #expect(try bytecode([.connectionState([.established, .related])]) == [
            "[ ct load state => reg 1 ]",
            "[ bitwise reg 1 = ( reg 1 & 0x00000006 ) ^ 0x00000000 ]",
            "[ cmp neq reg 1 0x00000000 ]",
        ])
    }

    @Test func family() throws {
        #expect(try bytecode([.family(.ipv4)]) == ["[ meta load nfproto => reg 1 ]", "[ cmp eq reg 1 0x00000002 ]"])
        #expect(try bytecode([.family(.ipv6)]) == ["[ meta load nfproto => reg 1 ]", "[ cmp eq reg 1 0x0000000a ]"])
    }

    @Test func sourceNetworkByteAlignedLoadsOnlyThePrefix() throws {
        #expect(try bytecode([.sourceNetwork(network("172.22.0.1/24"))]) == [
            "[ meta load nfproto => reg 1 ]",
            "[ cmp eq reg 1 0x00000002 ]",
            "[ payload load 3b @ network header + 12 => reg 1 ]",
            "[ cmp eq reg 1 0x000016ac ]",
        ])
        #expect(try bytecode([.sourceNetwork(network("10.0.0.1/32"))]) == [
            "[ meta load nfproto => reg 1 ]",
            "[ cmp eq reg 1 0x00000002 ]",
            "[ payload load 4b @ network header + 12 => reg 1 ]",
            "[ cmp eq reg 1 0x0100000a ]",
        ])
    }

    @Test func sourceNetworkUnalignedUsesAMask() throws {
        #expect(try bytecode([.sourceNetwork(network("172.16.0.0/12"))]) == [
            "[ meta load nfproto => reg 1 ]",
            "[ cmp eq reg 1 0x00000002 ]",
            "[ payload load 4b @ network header + 12 => reg 1 ]",
            "[ bitwise reg 1 = ( reg 1 & 0x0000f0ff ) ^ 0x00000000 ]",
            "[ cmp eq reg 1 0x000010ac ]",
        ])
        #expect(try bytecode([.sourceNetwork(network("0.0.0.0/0"))]) == [
            "[ meta load nfproto => reg 1 ]",
            "[ cmp eq reg 1 0x00000002 ]",
            "[ payload load 4b @ network header + 12 => reg 1 ]",
            "[ bitwise reg 1 = ( reg 1 & 0x00000000 ) ^ 0x00000000 ]",
            "[ cmp eq reg 1 0x00000000 ]",
        ])
    }

    @Test func destinationAddress() throws {
        #expect(try bytecode([.destinationAddress(address("192.0.2.1"))]) == [
            "[ meta load nfproto => reg 1 ]",
            "[ cmp eq reg 1 0x00000002 ]",
            "[ payload load 4b @ network header + 16 => reg 1 ]",
            "[ cmp eq reg 1 0x010200c0 ]",
        ])
    }

    @Test func icmpIsMetaL4proto() throws {
        #expect(try bytecode([.protocolICMP]) == ["[ meta load l4proto => reg 1 ]", "[ cmp eq reg 1 0x00000001 ]"])
    }

    @Test func destinationPorts() throws {
        #expect(try bytecode([.destinationPort(.udp, 1194)]) == [
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x00000011 ]",
            "[ payload load 2b @ transport header + 2 => reg 1 ]",
            "[ cmp eq reg 1 0x0000aa04 ]",
        ])
        #expect(try bytecode([.destinationPort(.tcp, 443)]) == [
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x00000006 ]",
            "[ payload load 2b @ transport header + 2 => reg 1 ]",
            "[ cmp eq reg 1 0x0000bb01 ]",
        ])
    }

    @Test func mark() throws {
        #expect(try bytecode([.mark(0x1234)]) == ["[ meta load mark => reg 1 ]", "[ cmp eq reg 1 0x00001234 ]"])
    }

    @Test func dependenciesAreEmittedOncePerRule() throws {
        // `ip saddr 1.2.3.4 ip daddr 5.6.7.8`: one nfproto check, as nft does.
        #expect(try bytecode([.sourceNetwork(network("1.2.3.4/32")), .destinationAddress(address("5.6.7.8"))]) == [
            "[ meta load nfproto => reg 1 ]",
            "[ cmp eq reg 1 0x00000002 ]",
            "[ payload load 4b @ network header + 12 => reg 1 ]",
            "[ cmp eq reg 1 0x04030201 ]",
            "[ payload load 4b @ network header + 16 => reg 1 ]",
            "[ cmp eq reg 1 0x08070605 ]",
        ])
        // `meta nfproto ipv4 ip saddr 1.2.3.4`: the explicit match is the dependency.
        #expect(try bytecode([.family(.ipv4), .sourceNetwork(network("1.2.3.4/32"))]) == [
            "[ meta load nfproto => reg 1 ]",
            "[ cmp eq reg 1 0x00000002 ]",
            "[ payload load 4b @ network header + 12 => reg 1 ]",
            "[ cmp eq reg 1 0x04030201 ]",
        ])
        // `udp dport 53 udp dport 54`: one l4proto check.
        #expect(try bytecode([.destinationPort(.udp, 53), .destinationPort(.udp, 54)]) == [
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x00000011 ]",
            "[ payload load 2b @ transport header + 2 => reg 1 ]",
            "[ cmp eq reg 1 0x00003500 ]",
            "[ payload load 2b @ transport header + 2 => reg 1 ]",
            "[ cmp eq reg 1 0x00003600 ]",
        ])
    }

    @Test func counterAndVerdicts() throws {
        #expect(try NftTranslator.expressions(for: Rule([], counted: true, .drop)).map(\.description)
            == ["[ counter pkts 0 bytes 0 ]", "[ immediate reg 0 drop ]"])
        #expect(try NftTranslator.expressions(for: Rule([], .accept)).map(\.description) == ["[ immediate reg 0 accept ]"])
        #expect(try NftTranslator.expressions(for: Rule([.outputInterface("tun0")], .masquerade)).last?.description == "[ masq ]")
    }

    @Test func overlongInterfaceNamesAreRefused() {
        #expect(throws: NftTranslationError.self) { try NftTranslator.expressions(for: Rule([.inputInterface("sixteen-bytes-xx")], .accept)) }
        #expect(throws: NftTranslationError.self) { try NftTranslator.expressions(for: Rule([.outputInterface("a\0b")], .accept)) }
        #expect(throws: Never.self) { try NftTranslator.expressions(for: Rule([.inputInterface("fifteen-bytes-x")], .accept)) }
    }

    @Test func namespaceGuardNeverAllowsTheInitialNamespace() throws {
        let own = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        print("network namespace \(own); kernel tests \(FirewallTestEnvironment.canRun ? "enabled" : "skipped")")
        if own == "net:[4026531833]" { #expect(!FirewallTestEnvironment.isPrivateNetworkNamespace) }
        if getuid() != 0 { #expect(!FirewallTestEnvironment.isPrivateNetworkNamespace) }
    }

    @Test func verificationReportsEveryDifference() throws {
        let expected = try everyMatch.chains.map { NftChainState($0, rules: try $0.rules.map { try NftTranslator.expressions(for: $0) }) }
        #expect(NftChainState.differences(expected: expected, actual: expected).isEmpty)

        var actual = expected
        actual[1].rules.removeLast()
        actual[2].policy = Chain.Policy.accept.verdictCode
        actual[3].rules[1].removeFirst()
        actual.remove(at: 4)
        actual.append(NftChainState(name: "stray", type: "filter", hook: 1, priority: 0, policy: 1, rules: []))
        let differences = NftChainState.differences(expected: expected, actual: actual)
        #expect(differences.count == 5, "\(differences)")
        #expect(differences.contains("chain input: 7 rules, expected 8"))
        #expect(differences.contains("chain postrouting is missing"))
        #expect(differences.contains("unexpected chain stray"))
    }
}

// MARK: - Kernel (root, private network namespace only)

/// Whether these tests may touch nftables: root, and provably not the host's own network
/// namespace, where a drop policy would cut the machine off. Run them with `unshare --net`.
enum FirewallTestEnvironment {
    static let isPrivateNetworkNamespace = IsolatedNetworkNamespace.isRootInside

    static let nft: String? = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let ip: String? = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }

    static var canRun: Bool { isPrivateNetworkNamespace && nft != nil }

}

private func nft(_ arguments: String..., input: String? = nil) throws -> (status: Int32, output: String) {
    try runTool(FirewallTestEnvironment.nft!, arguments, input: input)
}

/// `nft list table inet NAME`, with counter values normalised away.
private func listing(_ table: String = "vpnsup") throws -> String {
    let result = try nft("list", "table", "inet", table)
    #expect(result.status == 0, "nft list table inet \(table): \(result.output)")
    return result.output.replacing(/counter packets \d+ bytes \d+/, with: "counter")
}

/// `nft --debug=netlink list table inet NAME`: the bytecode the kernel holds, with rule handles
/// and the table name removed so two tables can be compared.
private func bytecodeListing(_ table: String) throws -> [String] {
    let result = try nft("--debug=netlink", "list", "table", "inet", table)
    #expect(result.status == 0, "\(result.output)")
    var lines: [String] = []
    for line in result.output.split(separator: "\n") {
        if line.hasPrefix("inet \(table) ") {
            let words = line.split(separator: " ")
            lines.append("rule in chain \(words[2])")
        } else if line.hasPrefix("  [") {
            lines.append(String(line).replacing(/counter pkts \d+ bytes \d+/, with: "counter"))
        }
    }
    return lines
}

/// Loads `ruleset`'s nft text with nft itself into table `inet reference`, the yardstick for
/// what our own netlink messages should produce.
private func loadReference(_ ruleset: Ruleset) throws {
    _ = try nft("delete", "table", "inet", "reference")
    let text = ruleset.nftText.replacingOccurrences(of: "table inet \(Ruleset.tableName) {", with: "table inet reference {")
    let result = try nft("-f", "-", input: text)
    #expect(result.status == 0, "nft -f: \(result.output)\n\(text)")
}

private func milliseconds(_ duration: Duration) -> String {
    let (seconds, attoseconds) = duration.components
    return String(format: "%.2f ms", Double(seconds) * 1000 + Double(attoseconds) / 1e15)
}

@Suite("Firewall: kernel", .serialized,
       .enabled(if: FirewallTestEnvironment.canRun,
                "needs root, nft, and a private network namespace: run under `unshare --net`"))
final class FirewallKernelTests {
    let firewall: Firewall

    init() throws {
        firewall = try Firewall()
        try firewall.deleteTable()
    }

    deinit {
        // Leave the namespace clean for whatever runs next in it.
        try? firewall.deleteTable()
        if FirewallTestEnvironment.nft != nil { _ = try? nft("delete", "table", "inet", "reference") }
    }

    @Test func commitsEveryMatchKindAsNftWouldListIt() throws {
        let clock = ContinuousClock()
        let elapsed = try clock.measure { try firewall.commit(everyMatch) }
        print("commit of the every-match ruleset (5 chains, 17 rules, incl. read-back): \(milliseconds(elapsed))")
        let listed = try listing()
        #expect(listed == everyMatchListing)
        // Line by line too, so a failure names the line.
        for line in everyMatchListing.split(separator: "\n") {
            #expect(listed.split(separator: "\n").contains(line), "missing: \(line)")
        }
    }

    @Test(arguments: [
        ("every match", everyMatch),
        ("lockdown", Ruleset.lockdown),
        ("connecting", Ruleset.build(.connecting, for: layout)),
        ("up", Ruleset.build(.up, for: layout)),
        ("up with DNS and forwards", Ruleset.build(.up, for: forwardingLayout)),
    ])
    func bytecodeIsWhatNftGenerates(name: String, ruleset: Ruleset) throws {
        try firewall.commit(ruleset)
        try loadReference(ruleset)
        #expect(try bytecodeListing("vpnsup") == bytecodeListing("reference"), "\(name)")
        #expect(try listing("vpnsup") == listing("reference").replacingOccurrences(of: "table inet reference", with: "table inet vpnsup"))
        _ = try nft("delete", "table", "inet", "reference")
    }

    @Test func committingTwiceIsIdempotent() throws {
        try firewall.commit(everyMatch)
        let first = try listing()
        try firewall.commit(everyMatch)
        #expect(try listing() == first)
        // A second socket (as after a restart) replaces it the same way.
        try Firewall().commit(everyMatch)
        #expect(try listing() == first)
    }

    @Test func aDifferentRulesetReplacesTheTableCompletely() throws {
        try firewall.commit(everyMatch)
        try firewall.commit(.lockdown)
        #expect(try listing() == """
            table inet vpnsup {
            \tchain input {
            \t\ttype filter hook input priority filter; policy drop;
            \t\tiifname "lo" accept
            \t\tcounter drop
            \t}

            \tchain forward {
            \t\ttype filter hook forward priority filter; policy drop;
            \t\tcounter drop
            \t}

            \tchain output {
            \t\ttype filter hook output priority filter; policy drop;
            \t\toifname "lo" accept
            \t\tcounter drop
            \t}
            }

            """)
        // And back again, from a smaller table to a larger one.
        try firewall.commit(everyMatch)
        #expect(try listing() == everyMatchListing)
    }

    @Test func aRejectedRulesetThrowsAndLeavesThePreviousTable() throws {
        try firewall.commit(everyMatch)

        var overlong = everyMatch
        overlong.chains[1].name = String(repeating: "c", count: 300)
        let nameError = #expect(throws: FirewallError.self) { try firewall.commit(overlong) }
        print("300-character chain name: \(nameError.map { "\($0)" } ?? "-")")
        #expect(nameError?.kind == .rejected)
        #expect(nameError?.errno != nil)
        #expect(nameError?.description.contains("chain cccc") == true)
        #expect(nameError?.description.contains("(300 bytes)") == true)
        #expect(try listing() == everyMatchListing)

        var natOnForward = everyMatch
        natOnForward.chains.append(Chain(name: "natforward", kind: .nat, hook: .forward, priority: 0, policy: .accept, rules: []))
        let hookError = #expect(throws: FirewallError.self) { try firewall.commit(natOnForward) }
        print("nat chain on the forward hook: \(hookError.map { "\($0)" } ?? "-")")
        #expect(hookError?.kind == .rejected)
        #expect(hookError?.errno == EOPNOTSUPP)
        #expect(hookError?.message.contains("natforward") == true)
        #expect(try listing() == everyMatchListing)

        var duplicate = everyMatch
        duplicate.chains.append(everyMatch.chains[0])
        let duplicateError = #expect(throws: FirewallError.self) { try firewall.commit(duplicate) }
        print("duplicate chain: \(duplicateError.map { "\($0)" } ?? "-")")
        #expect(duplicateError?.errno == EEXIST)
        #expect(try listing() == everyMatchListing)

        // Refused before anything is sent.
        let badName = Ruleset(chains: [Chain(name: "input", kind: .filter, hook: .input, priority: 0, policy: .accept,
                                             rules: [Rule([.inputInterface("much-too-long-name")], .accept)])])
        let nameRefusal = #expect(throws: FirewallError.self) { try firewall.commit(badName) }
        #expect(nameRefusal?.kind == .invalidRuleset)
        #expect(try listing() == everyMatchListing)

        // And the firewall still works afterwards.
        try firewall.commit(.lockdown)
        #expect(try listing().contains("chain natforward") == false)
    }

    @Test(.enabled(if: FirewallTestEnvironment.ip != nil, "needs ip(8) to bring lo up"))
    func countersCountDroppedPackets() throws {
        #expect(try runTool(FirewallTestEnvironment.ip!, ["link", "set", "lo", "up"]).status == 0)
        let discard = Ruleset(chains: [
            Chain(name: "output", kind: .filter, hook: .output, priority: 0, policy: .accept, rules: [
                Rule([.destinationPort(.udp, 9)], counted: true, .drop),
                Rule([.destinationPort(.udp, 7)], .drop), // not counted: must not show up
            ]),
            Chain(name: "input", kind: .filter, hook: .input, priority: 0, policy: .accept, rules: [
                Rule([.destinationPort(.tcp, 9)], counted: true, .drop),
            ]),
        ])
        try firewall.commit(discard)
        let before = try firewall.dropCounters()
        #expect(before == ["output": FirewallCounter(packets: 0, bytes: 0), "input": FirewallCounter(packets: 0, bytes: 0)])

        let payload = [UInt8](repeating: 0x55, count: 10)
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        for port: UInt16 in [9, 9, 9, 7] {
            var target = sockaddr_in()
            target.sin_family = sa_family_t(AF_INET)
            target.sin_port = port.bigEndian
            target.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            let sent = withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, payload, payload.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            // An output-hook drop reports EPERM to the sender: proof the rule saw the packet.
            #expect(sent == -1 && errno == EPERM)
        }

        let after = try firewall.dropCounters()
        // 3 datagrams of 20 (IPv4) + 8 (UDP) + 10 bytes each.
        #expect(after["output"] == FirewallCounter(packets: 3, bytes: 3 * 38))
        #expect(after["input"] == FirewallCounter(packets: 0, bytes: 0))
        #expect(after.count == 2)
        let listed = try nft("list", "chain", "inet", "vpnsup", "output").output
        #expect(listed.contains("udp dport 9 counter packets 3 bytes 114 drop"))
    }

    @Test func deleteTableRemovesItAndIsIdempotent() throws {
        try firewall.commit(everyMatch)
        try firewall.deleteTable()
        #expect(try nft("list", "table", "inet", "vpnsup").status != 0)
        try firewall.deleteTable()
        #expect(try firewall.dropCounters() == [:])
        // Committing after a delete starts from nothing and works.
        try firewall.commit(.lockdown)
        #expect(try listing().contains("chain output"))
    }

    @Test func largeBatchesFitTheSocketBuffers() throws {
        // 10,000 rules: a batch of about 1.5 MB (far above the default send buffer) and 10,000 ACKs.
        let rules = (0..<10_000).map { index in
            Rule([.inputInterface("eth1"), .destinationPort(.tcp, UInt16(1024 + index))], .accept)
        }
        let big = Ruleset(chains: [
            Chain(name: "input", kind: .filter, hook: .input, priority: 0, policy: .accept, rules: rules),
        ])
        let clock = ContinuousClock()
        let elapsed = try clock.measure { try firewall.commit(big) }
        print("commit of 10,000 rules (incl. read-back): \(milliseconds(elapsed))")
        let again = try clock.measure { try firewall.commit(big) }
        print("recommit of 10,000 rules over the existing table: \(milliseconds(again))")
        let readBack = try clock.measure { _ = try firewall.readTable() }
        print("read-back (verification) alone of 10,000 rules: \(milliseconds(readBack))")
        // For comparison: nft itself loading the same ruleset as text (a process start included).
        _ = try nft("delete", "table", "inet", "reference")
        let text = big.nftText.replacingOccurrences(of: "table inet vpnsup {", with: "table inet reference {")
        try text.write(toFile: "/tmp/vpnsup-firewall-test-\(getpid()).nft", atomically: true, encoding: .utf8)
        defer { unlink("/tmp/vpnsup-firewall-test-\(getpid()).nft") }
        var status: Int32 = -1
        let viaNft = try clock.measure { status = try nft("-f", "/tmp/vpnsup-firewall-test-\(getpid()).nft").status }
        #expect(status == 0)
        print("nft -f of the same 10,000 rules (no read-back): \(milliseconds(viaNft))")
        _ = try nft("delete", "table", "inet", "reference")
        let small = try clock.measure { try firewall.commit(Ruleset.build(.up, for: layout)) }
        print("commit of the `up` ruleset over it: \(milliseconds(small))")
        #expect(try listing().contains("tcp dport 11023") == false)
    }
}
