import StateMachine
import Testing

// docs/reliability.md, "Bad input": the pure parsing side of the cases the table lists (the
// ParserTests suites hold the rest), and the crashes and invariant breaks fuzz/ found.

@Suite("Fuzz regressions: configuration")
struct ConfigurationFuzzRegressionTests {
    /// fuzz/regressions/FuzzConfiguration/interface-name-quote: Linux takes `e"th1` as an interface
    /// name, but nft strings have no escape, so the dry-run ruleset would not load. Refused now.
    @Test(arguments: ["LAN_IF", "WAN_IF"])
    func anInterfaceNameWithAQuoteIsRefused(variable: String) {
        var values = ["CONFIG": "client.ovpn", "IP_ADDR": "172.22.0.1/24"]
        values[variable] = "e\"th1"
        #expect {
            try Configuration(values)
        } throws: { error in
            (error as? ConfigurationError)?.description == "\(variable)=e\"th1 holds a '\"', which nft cannot write in a ruleset"
        }
    }

    @Test func everyAcceptedInterfaceNameKeepsTheNftTextQuoted() throws {
        let configuration = try Configuration(["CONFIG": "c.ovpn", "IP_ADDR": "172.22.0.1/24",
                                               "LAN_IF": "br-lan'\\x", "WAN_IF": "wan#1"])
        let endpoint = Endpoint(address: IPv4Address(192, 0, 2, 1), port: 1194, transport: .udp)
        for policy in FirewallPolicy.allCases {
            let text = Ruleset.build(policy, for: configuration.layout(endpoints: [endpoint])).nftText
            for line in text.split(separator: "\n") {
                #expect(line.filter { $0 == "\"" }.count % 2 == 0, "\(line)")
            }
        }
    }
}
