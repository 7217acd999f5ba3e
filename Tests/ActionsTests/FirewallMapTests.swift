import CNftnl
import Foundation
import Glibc
import StateMachine
import Testing
@testable import Actions

// Port-forward maps, destination NAT, neighbour discovery and MSS clamping: their translation
// to nft bytecode (no kernel), and kernel tests that each run in network namespaces of their
// own, never in the test process's (other suites may share that one).

private func address(_ text: String) -> IPv4Address { IPv4Address(text)! }

/// `up` with DNS enforcement and forwards of both protocols.
let forwardingLayout = NetworkLayout(
    lanInterface: "eth1", wanInterface: "eth0", tunnelInterface: "tun0",
    endpoints: [Endpoint(address: address("198.51.100.7"), port: 1194, transport: .udp),
                Endpoint(address: address("203.0.113.9"), port: 443, transport: .tcp)],
    transportMark: 0x5650, dns: address("10.64.0.1"),
    portForwards: [
        PortForward(publicPort: 8080, target: address("172.22.0.10"), targetPort: 80, transport: .tcp),
        PortForward(publicPort: 2222, target: address("172.22.0.11"), targetPort: 22, transport: .tcp),
        PortForward(publicPort: 51820, target: address("172.22.0.12"), targetPort: 51820, transport: .udp),
        PortForward(publicPort: 8080, target: address("172.22.0.13"), targetPort: 8081, transport: .udp),
    ])

/// `count` forwards from public ports 20000 onwards, every third one UDP, to targets spread over
/// 172.30.0.0/16 (never 172.30.255.x, kept for the router).
func manyForwards(_ count: Int) -> [PortForward] {
    (0..<count).map { (index: Int) -> PortForward in
        let target = IPv4Address(172, 30, UInt8(index / 250), UInt8(index % 250 + 2))
        let transport: TransportProtocol = index % 3 == 0 ? .udp : .tcp
        return PortForward(publicPort: UInt16(20_000 + index), target: target, targetPort: UInt16(1024 + index),
                           transport: transport)
    }
}

/// The netlink attributes in `bytes`, in order, as (type with flags masked off, value without padding).
private func attributes(_ bytes: ArraySlice<UInt8>) -> [(type: UInt16, value: ArraySlice<UInt8>)] {
    var result: [(type: UInt16, value: ArraySlice<UInt8>)] = []
    var offset = bytes.startIndex
    while offset + 4 <= bytes.endIndex {
        let length = Int(UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8)
        let type = (UInt16(bytes[offset + 2]) | UInt16(bytes[offset + 3]) << 8) & 0x3fff
        guard length >= 4, offset + length <= bytes.endIndex else { break }
        result.append((type, bytes[(offset + 4)..<(offset + length)]))
        offset += (length + 3) & ~3
    }
    return result
}

private func attribute(_ type: UInt32, in bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
    attributes(bytes).first { $0.type == UInt16(type) }?.value
}

// MARK: - Translation (no kernel needed)

@Suite("Firewall: NAT, maps, neighbour discovery and MSS clamp in nft bytecode")
struct FirewallMapTranslationTests {
    private let maps: [String: UInt32] = ["tcp_forwards": 1, "udp_forwards": 2]

    private func bytecode(_ rule: Rule) throws -> [String] {
        try NftTranslator.expressions(for: rule, maps: maps).map(\.description)
    }

    // Expected lines: `nft --debug=netlink -f` (nftables 1.0.6) on each rule's nft text, inet table.

    @Test func notDestinationAddress() throws {
        #expect(try bytecode(Rule([.notDestinationAddress(address("10.0.0.53"))], .accept)) == [
            "[ meta load nfproto => reg 1 ]",
            "[ cmp eq reg 1 0x00000002 ]",
            "[ payload load 4b @ network header + 16 => reg 1 ]",
            "[ cmp neq reg 1 0x3500000a ]",
            "[ immediate reg 0 accept ]",
        ])
    }

    @Test func neighbourDiscoveryBringsItsIPv6Dependencies() throws {
        // iifname "eth1" icmpv6 type nd-neighbor-solicit accept
        #expect(try bytecode(Rule([.inputInterface("eth1"), .neighbourDiscovery(.neighbourSolicit)], .accept)) == [
            "[ meta load iifname => reg 1 ]",
            "[ cmp eq reg 1 0x31687465 0x00000000 0x00000000 0x00000000 ]",
            "[ meta load nfproto => reg 1 ]",
            "[ cmp eq reg 1 0x0000000a ]",
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x0000003a ]",
            "[ payload load 1b @ transport header + 0 => reg 1 ]",
            "[ cmp eq reg 1 0x00000087 ]",
            "[ immediate reg 0 accept ]",
        ])
        // meta nfproto ipv6 icmpv6 type nd-router-solicit accept: the explicit match is the dependency.
        #expect(try bytecode(Rule([.family(.ipv6), .neighbourDiscovery(.routerSolicit)], .accept)) == [
            "[ meta load nfproto => reg 1 ]",
            "[ cmp eq reg 1 0x0000000a ]",
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x0000003a ]",
            "[ payload load 1b @ transport header + 0 => reg 1 ]",
            "[ cmp eq reg 1 0x00000085 ]",
            "[ immediate reg 0 accept ]",
        ])
        // ip daddr 1.2.3.4 icmpv6 type nd-router-solicit accept: nft adds no nfproto once one is known.
        #expect(try bytecode(Rule([.destinationAddress(address("1.2.3.4")), .neighbourDiscovery(.routerSolicit)], .accept)) == [
            "[ meta load nfproto => reg 1 ]",
            "[ cmp eq reg 1 0x00000002 ]",
            "[ payload load 4b @ network header + 16 => reg 1 ]",
            "[ cmp eq reg 1 0x04030201 ]",
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x0000003a ]",
            "[ payload load 1b @ transport header + 0 => reg 1 ]",
            "[ cmp eq reg 1 0x00000085 ]",
            "[ immediate reg 0 accept ]",
        ])
        #expect(NeighbourDiscovery.allCases.map(\.type) == [133, 134, 135, 136])
    }

    @Test func destinationNATed() throws {
        // iifname "tun0" oifname "eth1" ct status dnat accept
        #expect(try bytecode(Rule([.inputInterface("tun0"), .outputInterface("eth1"), .destinationNATed], .accept)) == [
            "[ meta load iifname => reg 1 ]",
            "[ cmp eq reg 1 0x306e7574 0x00000000 0x00000000 0x00000000 ]",
            "[ meta load oifname => reg 1 ]",
            "[ cmp eq reg 1 0x31687465 0x00000000 0x00000000 0x00000000 ]",
            "[ ct load status => reg 1 ]",
            "[ bitwise reg 1 = ( reg 1 & 0x00000020 ) ^ 0x00000000 ]",
            "[ cmp neq reg 1 0x00000000 ]",
            "[ immediate reg 0 accept ]",
        ])
    }

    @Test func clampMSSOnSYNs() throws {
        // oifname "tun0" tcp flags syn tcp option maxseg size set rt mtu (a statement: no verdict)
        #expect(try bytecode(Rule([.outputInterface("tun0"), .tcpSYN], .clampMSSToPathMTU)) == [
            "[ meta load oifname => reg 1 ]",
            "[ cmp eq reg 1 0x306e7574 0x00000000 0x00000000 0x00000000 ]",
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x00000006 ]",
            "[ payload load 1b @ transport header + 13 => reg 1 ]",
            "[ bitwise reg 1 = ( reg 1 & 0x00000002 ) ^ 0x00000000 ]",
            "[ cmp neq reg 1 0x00000000 ]",
            "[ rt load tcpmss => reg 1 ]",
            "[ byteorder reg 1 = hton(reg 1, 2, 2) ]",
            "[ exthdr write tcpopt reg 1 => 2b @ 2 + 2 ]",
        ])
        // With a counter, the counter comes first; without `tcp flags syn`, nft adds no dependency.
        #expect(try bytecode(Rule([.outputInterface("tun0")], counted: true, .clampMSSToPathMTU)).suffix(4) == [
            "[ counter pkts 0 bytes 0 ]",
            "[ rt load tcpmss => reg 1 ]",
            "[ byteorder reg 1 = hton(reg 1, 2, 2) ]",
            "[ exthdr write tcpopt reg 1 => 2b @ 2 + 2 ]",
        ])
    }

    @Test func destinationNATToAnAddress() throws {
        // iifname "eth1" ip daddr != 10.0.0.53 udp dport 53 dnat ip to 10.0.0.53
        #expect(try bytecode(Rule([.inputInterface("eth1"), .notDestinationAddress(address("10.0.0.53")),
                                   .destinationPort(.udp, 53)], .destinationNAT(address("10.0.0.53")))) == [
            "[ meta load iifname => reg 1 ]",
            "[ cmp eq reg 1 0x31687465 0x00000000 0x00000000 0x00000000 ]",
            "[ meta load nfproto => reg 1 ]",
            "[ cmp eq reg 1 0x00000002 ]",
            "[ payload load 4b @ network header + 16 => reg 1 ]",
            "[ cmp neq reg 1 0x3500000a ]",
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x00000011 ]",
            "[ payload load 2b @ transport header + 2 => reg 1 ]",
            "[ cmp eq reg 1 0x00003500 ]",
            "[ immediate reg 1 0x3500000a ]",
            "[ nat dnat ip addr_min reg 1 ]",
        ])
        // counter dnat ip to 10.1.1.1: no family dependency of its own.
        #expect(try bytecode(Rule([], counted: true, .destinationNAT(address("10.1.1.1")))) == [
            "[ counter pkts 0 bytes 0 ]",
            "[ immediate reg 1 0x0101010a ]",
            "[ nat dnat ip addr_min reg 1 ]",
        ])
    }

    @Test func destinationNATThroughAMap() throws {
        // iifname "tun0" dnat ip to tcp dport map @tcp_forwards
        let rule = Rule([.inputInterface("tun0")], .destinationNATMap(name: "tcp_forwards", transport: .tcp))
        #expect(try bytecode(rule) == [
            "[ meta load iifname => reg 1 ]",
            "[ cmp eq reg 1 0x306e7574 0x00000000 0x00000000 0x00000000 ]",
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x00000006 ]",
            "[ payload load 2b @ transport header + 2 => reg 1 ]",
            "[ lookup reg 1 set tcp_forwards dreg 1 ]",
            "[ nat dnat ip addr_min reg 1 proto_min reg 9 ]",
        ])
        // The lookup names the map and carries its ID in the batch.
        #expect(try NftTranslator.expressions(for: rule, maps: maps).contains(.lookup(set: "tcp_forwards", id: 1)))
        // iifname "tun0" counter dnat ip to udp dport map @udp_forwards: the dependency follows the counter.
        #expect(try bytecode(Rule([.inputInterface("tun0")], counted: true,
                                  .destinationNATMap(name: "udp_forwards", transport: .udp))).dropFirst(2) == [
            "[ counter pkts 0 bytes 0 ]",
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x00000011 ]",
            "[ payload load 2b @ transport header + 2 => reg 1 ]",
            "[ lookup reg 1 set udp_forwards dreg 1 ]",
            "[ nat dnat ip addr_min reg 1 proto_min reg 9 ]",
        ])
        // tcp dport 5 counter dnat ip to tcp dport map @tcp_forwards: tcp is already known.
        #expect(try bytecode(Rule([.destinationPort(.tcp, 5)], counted: true,
                                  .destinationNATMap(name: "tcp_forwards", transport: .tcp))) == [
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x00000006 ]",
            "[ payload load 2b @ transport header + 2 => reg 1 ]",
            "[ cmp eq reg 1 0x00000500 ]",
            "[ counter pkts 0 bytes 0 ]",
            "[ payload load 2b @ transport header + 2 => reg 1 ]",
            "[ lookup reg 1 set tcp_forwards dreg 1 ]",
            "[ nat dnat ip addr_min reg 1 proto_min reg 9 ]",
        ])
    }

    @Test func conflictingProtocolsAreRefusedAsNftRefusesThem() {
        // Each of these makes nft say "conflicting protocols specified".
        let conflicts: [Rule] = [
            Rule([.protocolICMP, .destinationPort(.tcp, 22)], .accept),
            Rule([.family(.ipv6), .destinationAddress(address("1.2.3.4"))], .accept),
            Rule([.destinationPort(.udp, 53), .tcpSYN], .accept),
            Rule([.neighbourDiscovery(.routerSolicit), .destinationAddress(address("1.2.3.4"))], .accept),
            Rule([.destinationPort(.udp, 5)], .destinationNATMap(name: "tcp_forwards", transport: .tcp)),
        ]
        for rule in conflicts {
            #expect(throws: NftTranslationError.self, "\(rule.nftText)") { try NftTranslator.expressions(for: rule, maps: maps) }
        }
    }

    @Test func aMapTheRulesetDoesNotDefineIsRefused() {
        let rule = Rule([.inputInterface("tun0")], .destinationNATMap(name: "nowhere", transport: .tcp))
        let error = #expect(throws: NftTranslationError.self) { try NftTranslator.expressions(for: rule, maps: maps) }
        #expect(error?.description.contains("@nowhere") == true)
        let ruleset = Ruleset(chains: [Chain(name: "prerouting", kind: .nat, hook: .prerouting, priority: -100,
                                             policy: .accept, rules: [rule])])
        let refusal = #expect(throws: FirewallError.self) { try NftCommitPlan(ruleset, table: "vpnsup") }
        #expect(refusal?.kind == .invalidRuleset)
    }

    @Test func forwardMapEntriesEncodeAsNftDoes() {
        // nft --debug=netlink: element 0000901f : 0200000a 00005000 (8080 : 10.0.0.2 . 80)
        let entry = ForwardMap.Entry(publicPort: 8080, target: address("10.0.0.2"), targetPort: 80)
        #expect(entry.nftKey == [0x1f, 0x90])
        #expect(entry.nftData == [10, 0, 0, 2, 0x00, 0x50, 0, 0])
        #expect(NftExpr.registerText(entry.nftKey) == "0x0000901f")
        #expect(NftExpr.registerText(entry.nftData) == "0x0200000a 0x00005000")
        #expect(ForwardMap.Entry(nftKey: entry.nftKey, data: entry.nftData) == entry)
        #expect(ForwardMap.Entry(nftKey: [0x1f, 0x90, 0, 0], data: entry.nftData) == nil)
        #expect(ForwardMap.Entry(nftKey: entry.nftKey, data: [10, 0, 0, 2, 0, 80]) == nil)
        #expect(ForwardMapFormat.dataType == 461)
    }

    @Test func duplicatesAreRefusedBeforeAnythingIsSent() {
        let map = ForwardMap(name: "tcp_forwards", transport: .tcp, entries: [
            .init(publicPort: 80, target: address("10.0.0.2"), targetPort: 80),
            .init(publicPort: 80, target: address("10.0.0.3"), targetPort: 80),
        ])
        let duplicatePort = #expect(throws: FirewallError.self) { try NftCommitPlan(Ruleset(chains: [], maps: [map]), table: "vpnsup") }
        #expect(duplicatePort?.kind == .invalidRuleset)
        #expect(duplicatePort?.message.contains("public port 80 twice") == true)

        let single = ForwardMap(name: "m", transport: .tcp, entries: [.init(publicPort: 80, target: address("10.0.0.2"), targetPort: 80)])
        let duplicateName = #expect(throws: FirewallError.self) { try NftCommitPlan(Ruleset(chains: [], maps: [single, single]), table: "vpnsup") }
        #expect(duplicateName?.message.contains("defined twice") == true)
    }

    @Test func tenThousandForwardsSplitIntoMessagesUnder64KiB() throws {
        var layout = forwardingLayout
        layout.portForwards = manyForwards(10_000)
        let ruleset = Ruleset.build(.up, for: layout)
        #expect(ruleset.maps.map(\.entries.count) == [3_334, 6_666])

        let batch = NftBatch(firstSequence: 1)
        try NftCommitPlan(ruleset, table: "vpnsup").append(to: batch)
        batch.finish()

        // Walk the batch: every message under 64 KiB; parse the element messages back.
        let newSetElem = UInt16(NFNL_SUBSYS_NFTABLES) << 8 | UInt16(NFT_MSG_NEWSETELEM.rawValue)
        let newSet = UInt16(NFNL_SUBSYS_NFTABLES) << 8 | UInt16(NFT_MSG_NEWSET.rawValue)
        let newChain = UInt16(NFNL_SUBSYS_NFTABLES) << 8 | UInt16(NFT_MSG_NEWCHAIN.rawValue)
        var types: [UInt16] = []
        var largest = 0
        var entries: [String: [ForwardMap.Entry]] = [:]
        var offset = 0
        try batch.bytes.withUnsafeBytes { raw in
            while offset + MemoryLayout<nlmsghdr>.size <= raw.count {
                let length = Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                let type = raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self)
                try #require(length >= MemoryLayout<nlmsghdr>.size && offset + length <= raw.count)
                types.append(type)
                largest = max(largest, length)
                if type == newSetElem {
                    // libnftnl numbers the element attributes 1...n, which its own parser refuses
                    // (the kernel does not care): decode the attributes here instead.
                    let message = Array(raw[(offset + 20)..<(offset + length)]) // after nlmsghdr and nfgenmsg
                    let name = String(decoding: try #require(attribute(NFTA_SET_ELEM_LIST_SET.rawValue, in: message[...]))
                                        .prefix { $0 != 0 }, as: UTF8.self)
                    let list = try #require(attribute(NFTA_SET_ELEM_LIST_ELEMENTS.rawValue, in: message[...]))
                    for element in attributes(list) {
                        let key = try #require(attribute(NFTA_SET_ELEM_KEY.rawValue, in: element.value))
                        let data = try #require(attribute(NFTA_SET_ELEM_DATA.rawValue, in: element.value))
                        let keyValue = try #require(attribute(NFTA_DATA_VALUE.rawValue, in: key))
                        let dataValue = try #require(attribute(NFTA_DATA_VALUE.rawValue, in: data))
                        let entry = try #require(ForwardMap.Entry(nftKey: Array(keyValue), data: Array(dataValue)))
                        entries[name, default: []].append(entry)
                    }
                }
                offset += (length + 3) & ~3
            }
        }
        #expect(offset == batch.bytes.count)
        #expect(largest < 65_536, "largest message: \(largest) bytes")
        print("10,000 forwards: \(batch.bytes.count) bytes in \(types.count) messages, largest \(largest) bytes")
        // udp: 3,334 elements = 2 messages; tcp: 6,666 = 4 (1,920 per message).
        #expect(ForwardMapFormat.elementsPerMessage == 1_920)
        #expect(types.filter { $0 == newSetElem }.count == 6)
        // The maps come before the first chain, which may refer to them.
        let lastMapMessage = try #require(types.lastIndex(of: newSetElem))
        #expect(types.firstIndex(of: newSet)! < lastMapMessage && lastMapMessage < types.firstIndex(of: newChain)!)
        for map in ruleset.maps {
            #expect(entries[map.name] == map.entries, "\(map.name)")
        }
    }

    @Test func mapVerificationReportsEveryDifference() {
        let map = ForwardMap(name: "tcp_forwards", transport: .tcp, entries: (0..<10).map {
            .init(publicPort: UInt16(1000 + $0), target: address("10.0.0.2"), targetPort: 80)
        })
        let expected = [NftMapState(map)]
        #expect(NftMapState.differences(expected: expected, actual: expected).isEmpty)

        var actual = expected
        actual[0].entries.removeLast(2)
        actual[0].entries.append(.init(publicPort: 9, target: address("10.0.0.9"), targetPort: 9))
        actual[0].dataLength = 4
        actual.append(NftMapState(ForwardMap(name: "stray", transport: .udp, entries: [])))
        let differences = NftMapState.differences(expected: expected, actual: actual)
        #expect(differences.contains("map tcp_forwards: data length is 4, expected 8"))
        #expect(differences.contains("map tcp_forwards: 9 elements, expected 10"))
        #expect(differences.contains("map tcp_forwards: 2 elements missing, e.g. 1008 : 10.0.0.2 . 80, 1009 : 10.0.0.2 . 80"))
        #expect(differences.contains("map tcp_forwards: 1 unexpected elements, e.g. 9 : 10.0.0.9 . 9"))
        #expect(differences.contains("unexpected map stray"))
        #expect(NftMapState.differences(expected: expected, actual: []) == ["map tcp_forwards is missing"])
    }
}
