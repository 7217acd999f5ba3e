import StateMachine
import Testing

// docs/reliability.md, "Bad input": the pure parsing side of the cases the table lists (the
// ParserTests suites hold the rest), and the crashes and invariant breaks fuzz/ found.

@Suite("Bad input: credentials")
struct CredentialsBadInputTests {
    @Test(arguments: [(0o644 as UInt32, "0644"), (0o444, "0444"), (0o666, "0666"), (0o104, "0104")])
    func everyoneCanReadThemWarns(mode: UInt32, shown: String) {
        #expect(Credentials.permissionWarning(path: "/run/secrets/c", mode: mode)
                == "CREDENTIALS_FILE=/run/secrets/c is readable by every user (mode \(shown)): chmod 600 it, or give the secret mode 0400")
    }

    @Test(arguments: [0o600 as UInt32, 0o400, 0o640, 0o440, 0o000])
    func ownerOrGroupOnlyIsQuiet(mode: UInt32) {
        #expect(Credentials.permissionWarning(path: "/c", mode: mode) == nil)
    }

    /// A line break ends the password: what follows it is never sent, so it cannot become a second
    /// management command; a bare CR, which OpenVPN would also take as a line end, is refused.
    @Test func aCommandAfterThePasswordIsNeverPartOfIt() throws {
        let lf = try Credentials(fileContents: "alice\npw\nsignal SIGTERM\n", path: "/c")
        #expect(lf.password == "pw")
        let crlf = try Credentials(fileContents: "alice\r\npw\r\nsignal SIGTERM\r\n", path: "/c")
        #expect(crlf.password == "pw")
        #expect {
            try Credentials(fileContents: "alice\npw\rsignal SIGTERM\n", path: "/c")
        } throws: { error in
            (error as? ConfigurationError)?.description
                == "CREDENTIALS_FILE=/c holds a control character that could inject a management command"
        }
    }
}

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

@Suite("Fuzz regressions: OpenVPN configuration")
struct OpenVPNConfigFuzzRegressionTests {
    /// fuzz/regressions/FuzzOpenVPNConfig/empty-quoted-host: `remote ""` gave a remote with an
    /// empty host, which vpnsup then tried to resolve as a host name. Dropped now, like a remote
    /// without a host.
    @Test func anEmptyQuotedHostIsNoRemote() {
        #expect(OpenVPNConfigFile.remotes(in: "remote \"\" 1194\nremote '' 443 tcp\nremote \"\"\n") == [])
        #expect(OpenVPNConfigFile.remotes(in: "remote \"\"\nremote \"192.0.2.1\" 1194\n")
                == [Remote(host: "192.0.2.1", port: 1194, transport: .udp)])
    }
}
