import StateMachine
import Testing

private func parse(_ text: String) -> [OpenVPNOption] {
    guard case .success(let options) = OpenVPNConfigSyntax.parse(text) else { return [] }
    return options
}

private func syntaxError(_ text: String) -> OpenVPNSyntaxError? {
    guard case .failure(let error) = OpenVPNConfigSyntax.parse(text) else { return nil }
    return error
}

/// Lines split at LF only ("\r\n" is one Character to Swift).
private func lines(_ text: String) -> [String] {
    text.utf8.split(separator: 0x0A, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
}

private func profiles(_ text: String) -> [String] {
    OpenVPNConfigFile.connectionProfiles(in: text).map(\.description)
}

/// Every option name of a parsed text, `<connection>` contents included.
private func names(_ options: [OpenVPNOption]) -> [String] {
    options.flatMap { [$0.name] + names($0.connection ?? []) }
}

/// How OpenVPN 2.6 reads a file (its parse_line, read_config_file, <connection> rules). Each
/// expectation was checked against OpenVPN 2.6.14 itself; Tests/corpus/differential.py checks
/// the same on whole files.
@Suite("OpenVPN configuration syntax")
struct OpenVPNConfigSyntaxTests {
    @Test func aBOMIsSkippedOnTheFirstLineOnly() {
        #expect(profiles("\u{FEFF}remote 192.0.2.1\n") == ["192.0.2.1 1194 udp"])
        // Anywhere else the BOM is part of the word: an option OpenVPN does not know.
        #expect(parse("client\n\u{FEFF}remote 192.0.2.1\n").map(\.name) == ["client", "\u{FEFF}remote"])
    }

    @Test func commentsStartOnlyAtAWord() {
        #expect(profiles("remote vpn.example.com # the server\n") == ["vpn.example.com 1194 udp"])
        #expect(profiles("remote vpn.example.com ;443\n") == ["vpn.example.com 1194 udp"])
        #expect(profiles("remote vpn.example.com#443\n") == ["vpn.example.com#443 1194 udp"])
        #expect(parse("  # remote 192.0.2.1\n;remote 192.0.2.2\n").isEmpty)
    }

    @Test func dashesBeforeTheFirstWordAreDropped() {
        #expect(profiles("--remote 192.0.2.2 443\n") == ["192.0.2.2 443 udp"])
        #expect(parse("--\n").map(\.name) == ["--"]) // too short to be dropped, as in OpenVPN
    }

    @Test func quotesAndEscapesAsOpenVPNsParseLine() {
        #expect(parse(#"ca "my keys/ca.crt""#)[0].words == ["ca", "my keys/ca.crt"])
        #expect(parse(#"ca 'C:\vpn\ca.crt'"#)[0].words == ["ca", #"C:\vpn\ca.crt"#]) // no escapes in '...'
        #expect(parse(#"ca my\ keys\\ca.crt"#)[0].words == ["ca", #"my keys\ca.crt"#])
        #expect(parse(#"auth-user-pass "a\"b""#)[0].words == ["auth-user-pass", #"a"b"#])
        #expect(parse(#"remote "x"y"#)[0].words == ["remote", "x", "y"]) // a quote ends a word
        #expect(parse(#"remote """#)[0].words == ["remote", ""])
        #expect(syntaxError(#"ca C:\vpn\ca.crt"#)?.message.hasPrefix("a backslash before 'v'") == true)
        #expect(syntaxError("client\nca \"ca.crt\n")?.line == 2)
        #expect(syntaxError("ca 'ca.crt\n")?.message == "no closing single quotation (')")
        #expect(syntaxError("ca ca.crt\\")?.message == "a backslash at the end of the file")
    }

    @Test func lineEndsAtLineFeedOnlyAndCRIsWhiteSpace() {
        #expect(profiles("client\r\nremote 192.0.2.1 1194\r\nproto tcp\r\n") == ["192.0.2.1 1194 tcp-client"])
        // A lone CR (old Mac files) does not end a line: OpenVPN sees one option of four words.
        #expect(parse("remote 192.0.2.1\rproto tcp\n")[0].words == ["remote", "192.0.2.1", "proto", "tcp"])
    }

    @Test func linesOpenVPNCannotReadAreErrors() {
        let longest = "verb 3 #" + String(repeating: "x", count: 254 - 8)
        #expect(parse(longest + "\n").count == 1)
        #expect(syntaxError("client\n" + longest + "x\n")?.line == 2)
        #expect(syntaxError("\u{FEFF}" + longest + "\n")?.line == 1) // the BOM counts towards the limit
        #expect(syntaxError("client\nremote 192.0.2.1\0up /bin/sh\n")?.line == 2)
    }

    @Test func wordsPastTheSixteenthAreIgnored() {
        let words = (1...20).map { "w\($0)" }
        #expect(parse(words.joined(separator: " "))[0].words == Array(words.prefix(16)))
    }

    @Test func namesAreCaseSensitive() {
        #expect(profiles("Remote 192.0.2.1\n").isEmpty)
        #expect(profiles("remote 192.0.2.1 1194 UDP\n").isEmpty) // OpenVPN refuses the line
    }

    @Test func inlineBlocksAreDataUpToTheirClosingTag() {
        let text = "client\n<ca>\r\nremote 198.51.100.4\r\n   </ca> trailing\r\nremote 192.0.2.1\n"
        let options = parse(text)
        #expect(options.map(\.name) == ["client", "ca", "remote"])
        #expect(options[1].body == "remote 198.51.100.4\r\n")
        #expect(options[1].lineCount == 3)
        #expect(options[2].line == 5)
        #expect(syntaxError("<ca>\nMIIB\n")?.message == "<ca> has no </ca> before the end of the file")
        #expect(syntaxError("client\n</ca>\n")?.line == 2)
        // OpenVPN reads a long body line in pieces of 255 bytes; a piece may close the block.
        let hidden = String(repeating: "A", count: 255) + "</ca>\n"
        #expect(syntaxError("<ca>\n" + hidden + "</ca>\n")?.line == 2)
    }

    @Test func connectionBlocksAsOpenVPNBuildsThem() {
        // A top-level remote beside blocks is ignored; each block starts from the top-level values
        // in force where it begins, so a global port after it does not reach it.
        let text = """
        client
        proto tcp
        remote 192.0.2.9
        <connection>
        remote 192.0.2.1
        </connection>
        port 8443
        <connection>
        remote 192.0.2.2 443 udp
        </connection>
        <connection>
        remote 192.0.2.3
        proto udp6
        </connection>
        """
        #expect(profiles(text) == ["192.0.2.1 1194 tcp-client", "192.0.2.2 443 udp", "192.0.2.3 8443 udp6"])
        #expect(OpenVPNConfigFile.connectionProfiles(in: text).map(\.line) == [5, 9, 12])
        // Without blocks, port and proto anywhere in the file apply to every remote.
        #expect(profiles("remote 192.0.2.1\nport 443\nproto tcp\n") == ["192.0.2.1 443 tcp"])
        #expect(profiles("client\nremote 192.0.2.1\nproto tcp4\n") == ["192.0.2.1 1194 tcp4-client"])
    }

    @Test func protoForceDisablesOtherProtocols() {
        let forced = OpenVPNConfigFile.connectionProfiles(in: "client\nremote 192.0.2.1 443 tcp\nremote 192.0.2.2\nproto-force udp\n")
        #expect(forced.map(\.disabledBy) == ["proto-force udp", nil])
        // OpenVPN compares the forced protocol as written with tcp-client: `tcp` disables all.
        #expect(OpenVPNConfigFile.connectionProfiles(in: "client\nremote 192.0.2.1 443 tcp\nproto-force tcp\n")[0].disabledBy != nil)
    }

    @Test func wordsAreWrittenBackSoThatOpenVPNReadsThemUnchanged() {
        for word in ["plain", "a b", "#x", ";x", "\"q", "'s", #"back\slash"#, "", "tab\there", "x\"y", "ünïcödé"] {
            let line = "ca " + OpenVPNConfigSyntax.quoted(word) + "\n"
            #expect(parse(line).first?.words == ["ca", word], "\(word.debugDescription)")
        }
    }
}

@Suite("OpenVPN configuration vetting")
struct OpenVPNConfigVettingTests {
    let path = "/config/provider.ovpn"

    /// Every directive that runs a program or loads code, at every place OpenVPN would read it.
    @Test(arguments: OpenVPNConfigVetting.runsPrograms.keys.sorted())
    func whatRunsProgramsNeverReachesOpenVPN(_ name: String) {
        let text = """
        client
        \(name) /etc/openvpn/update-resolv-conf
        --\(name) /tmp/x
        setenv opt \(name) /tmp/x
        <connection>
        remote 192.0.2.1
        \(name) /tmp/x
        </connection>
        """
        let vetted = OpenVPNConfigVetting.vet(text, path: path)
        #expect(vetted.refusal == nil)
        #expect(vetted.findings.map(\.line) == [2, 3, 4, 7])
        #expect(vetted.findings.allSatisfy { $0.action == .dropped && $0.level == .warning })
        #expect(!names(parse(vetted.text)).contains(name))
        #expect(!vetted.text.contains("/tmp/x"))
    }

    @Test func aProviderFileWithScripts() {
        let text = """
        client
        dev tun
        proto udp
        remote vpn.example.com 1194
        script-security 3 system
        up /etc/openvpn/update-resolv-conf
        down /etc/openvpn/update-resolv-conf
        auth-user-pass /config/credentials.txt
        user nobody
        group nogroup
        persist-tun
        """
        let vetted = OpenVPNConfigVetting.vet(text, path: path)
        #expect(vetted.error == nil)
        #expect(vetted.text == "client\n\nproto udp\nremote vpn.example.com 1194\n\n\n\n\n\n\n\n")
        #expect(vetted.findings.map(\.line) == [2, 5, 6, 7, 8, 9, 10, 11])
        #expect(vetted.findings.filter { $0.level == .notice }.map(\.line) == [2, 8, 9, 10, 11])
        #expect(vetted.located(vetted.findings[2]) == "CONFIG=/config/provider.ovpn:6: up /etc/openvpn/update-resolv-conf: dropped: runs a program (no configuration makes OpenVPN run or load anything under vpnsup)")
    }

    @Test func lineNumbersAndInlineBodiesSurvive() {
        let text = "client\r\n<ca>\r\n-----BEGIN CERTIFICATE-----\r\nMIIB\r\n-----END CERTIFICATE-----\r\n</ca>\r\nup /x\r\nremote 192.0.2.1 443\r\n<auth-user-pass>\r\nalice\r\nsecret\r\n</auth-user-pass>\r\nfoo-unknown 1\r\n"
        let vetted = OpenVPNConfigVetting.vet(text, path: path)
        let lines = lines(vetted.text)
        #expect(lines.count == 14)
        #expect(lines[1] == "<ca>")
        #expect(lines[3] == "MIIB\r")
        #expect(lines[5] == "</ca>")
        #expect(lines[6] == "")
        #expect(lines[7] == "remote 192.0.2.1 443")
        // The credentials of an inline <auth-user-pass> are vpnsup's business: never copied.
        #expect(!vetted.text.contains("secret"))
        #expect(lines[12] == "foo-unknown 1") // unknown options are OpenVPN's to judge (vpnsup check)
        #expect(vetted.findings.map(\.directive) == ["up /x", "<auth-user-pass>"])
    }

    @Test func theDeviceIsTun0() {
        #expect(OpenVPNConfigVetting.vet("dev tap\nremote 192.0.2.1\n", path: path).error ==
            "CONFIG=/config/provider.ovpn:1: dev tap: vpnsup routes at layer 3: OpenVPN's device is tun0, a tun (a tap device would bridge Ethernet frames)")
        #expect(OpenVPNConfigVetting.vet("dev mydev\ndev-type tap\nremote 192.0.2.1\n", path: path).refusal?.line == 1)
        #expect(OpenVPNConfigVetting.vet("dev-type tap\nremote 192.0.2.1\n", path: path).refusal?.line == 1)
        let renamed = OpenVPNConfigVetting.vet("dev tun7\nremote 192.0.2.1\n", path: path)
        #expect(renamed.error == nil)
        #expect(renamed.findings.first?.level == .warning)
        #expect(renamed.findings.first?.reason.contains("not tun7") == true)
        #expect(OpenVPNConfigVetting.vet("dev tun\nremote 192.0.2.1\n", path: path).findings.first?.level == .notice)
    }

    @Test func optionsOpenVPN26RemovedAreDroppedTranslatedOrRefused() {
        let dropped = OpenVPNConfigVetting.vet("""
        client
        remote 192.0.2.1
        cipher AES-256-CBC
        ncp-disable
        keysize 256
        key-method 2
        no-iv
        block-outside-dns
        tls-remote vpn-server.example.com
        providers legacy /tmp/evil.so
        """, path: path)
        #expect(dropped.error == nil)
        #expect(dropped.findings.map(\.action) == [.dropped, .dropped, .dropped, .dropped, .dropped, .translated, .translated])
        #expect(dropped.findings.map(\.line) == [4, 5, 6, 7, 8, 9, 10])
        #expect(dropped.findings[5].replacement == "verify-x509-name vpn-server.example.com name-prefix")
        #expect(dropped.findings[6].replacement == "providers legacy")
        #expect(lines(dropped.text)[8] == "verify-x509-name vpn-server.example.com name-prefix")

        let refusals = [
            ("cipher BF-CBC\nkeysize 256\n", 2), ("key-method 1\n", 1), ("tls-remote /C=US/CN=vpn\n", 1),
            ("tls-remote my_server\n", 1), ("config other.ovpn\n", 1), ("<<<<<<< HEAD\n", 1), ("=======\n", 1),
            ("http-proxy 192.0.2.9 3128\n", 1), ("mode server\n", 1), ("proto tcp-server\n", 1), ("genkey secret k\n", 1),
            ("management-external-key\n", 1), ("proto UDP\n", 1), ("remote a b c d\n", 1),
        ]
        for (text, line) in refusals {
            let vetted = OpenVPNConfigVetting.vet("remote 192.0.2.1\n" + text, path: path)
            #expect(vetted.refusal?.line == line + 1, "\(text)")
            #expect(vetted.text.isEmpty)
        }
        #expect(OpenVPNConfigVetting.vet("providers legacy default\n", path: path).findings.isEmpty)
        #expect(OpenVPNConfigVetting.vet("providers /tmp/evil.so\n", path: path).findings.first?.action == .dropped)
    }

    /// Found by `vettedTextIsAFixedPoint`: OpenVPN skips one BOM on line 1, so a file starting with
    /// two had `\u{FEFF}script-security` (unknown, harmless) on its first line, which the vetted
    /// text wrote back bare, where OpenVPN would skip the BOM and read `script-security`.
    @Test func aSecondBOMNeverTurnsIntoADirective() {
        let vetted = OpenVPNConfigVetting.vet("\u{FEFF}\u{FEFF}script-security 2\nremote 192.0.2.1\n", path: path)
        #expect(vetted.text.hasPrefix("\"\u{FEFF}script-security\" 2\n"))
        #expect(!names(parse(vetted.text)).contains("script-security"))
        // A backslash before the line break would put the break into a word.
        #expect(OpenVPNConfigVetting.vet("remote 192.0.2.1\\\nup /x\n", path: path).error == "CONFIG=/config/provider.ovpn:1: a backslash before the line break")
    }

    /// Found by FuzzOpenVPNConfig: `----up` is the unknown option `--up` to OpenVPN (it drops one
    /// `--`), and written back as `--up` it would have been read as `up`.
    @Test func aNameStartingWithDashesKeepsThem() {
        let vetted = OpenVPNConfigVetting.vet("----up /x\n-----END CERTIFICATE-----\nremote 192.0.2.1\n", path: path)
        #expect(lines(vetted.text).prefix(2) == ["----up /x", "-----END CERTIFICATE-----"])
        #expect(parse(vetted.text).map(\.name) == ["--up", "---END", "remote"])
        #expect(OpenVPNConfigVetting.vet(vetted.text, path: path).text == vetted.text)
    }

    @Test func aConnectionBlockWithoutRemoteIsRefused() {
        let vetted = OpenVPNConfigVetting.vet("<connection>\nup /x\nport 443\n</connection>\n", path: path)
        #expect(vetted.findings.map(\.action) == [.dropped, .refused])
        #expect(vetted.refusal?.line == 1)
        #expect(OpenVPNConfigVetting.vet("client\n\"a\\", path: path).error == "CONFIG=/config/provider.ovpn:2: no closing quotation (\")")
    }

    /// Whatever the input: the vetted text reads back as the options vpnsup kept (same profiles),
    /// holds nothing that runs a program, and vetting it again changes nothing.
    @Test func vettedTextIsAFixedPoint() {
        let pieces = ["client\n", "remote 192.0.2.1", " 443", " tcp", " udp6", " # c", "\n", "up /x\n", "setenv opt up /x\n",
                      "<connection>\n", "</connection>\n", "<ca>\n", "</ca>\n", "port 8443\n", "proto tcp\n", "\"", "'", "\\",
                      "--plugin a.so\n", "dev tun7\n", "\r\n", " ", "remote vpn.example.com\n", "script-security 2\n", "#", "\u{FEFF}"]
        var generator = SplitMix(seed: 0x7670_6e73)
        var checked = 0
        for _ in 0..<3000 {
            let text = (0..<generator.next(below: 24)).map { _ in pieces[generator.next(below: pieces.count)] }.joined()
            let vetted = OpenVPNConfigVetting.vet(text, path: path)
            guard vetted.refusal == nil else { continue }
            checked += 1
            guard case .success(let options) = OpenVPNConfigSyntax.parse(vetted.text) else {
                Issue.record("the vetted text of \(text.debugDescription) does not parse")
                continue
            }
            #expect(Set(names(options)).isDisjoint(with: OpenVPNConfigVetting.neverPassed), "\(text.debugDescription)")
            #expect(OpenVPNConfigFile.connectionProfiles(of: options) == vetted.profiles, "\(text.debugDescription)")
            let again = OpenVPNConfigVetting.vet(vetted.text, path: path)
            #expect(again.text == vetted.text, "\(text.debugDescription)")
            #expect(again.findings.isEmpty, "\(text.debugDescription): \(again.findings)")
        }
        #expect(checked > 500)
    }
}

@Suite("Remote plan")
struct RemotePlanTests {
    @Test func everyRemoteAsRunTreatsIt() {
        let plan = RemotePlan(OpenVPNConfigVetting.vet("""
        client
        remote 192.0.2.1 443 tcp
        remote vpn.example.com
        remote 2001:db8::1
        remote v6.example.com 1194 udp6
        remote 192.0.2.2 http
        remote 192.0.2.3 0
        remote ""
        """, path: "/c.ovpn"))
        #expect(plan.entries.map(\.treatment) == [
            .pinned(Endpoint(address: IPv4Address(192, 0, 2, 1), port: 443, transport: .tcp)),
            .resolvedAtRun(port: 1194, transport: .udp),
            .skipped("an IPv6 address, and the WAN carries IPv4 only"),
            .skipped("udp6 is IPv6 only, and the WAN carries IPv4 only"),
            .skipped("port 'http' is not a number in 1...65535 (vpnsup pins numeric ports)"),
            .skipped("port '0' is not a number in 1...65535 (vpnsup pins numeric ports)"),
            .skipped("no host"),
        ])
        #expect(plan.entries.map(\.family) == [.ipv4, .any, .ipv6, .ipv6, .ipv4, .ipv4, .any])
        #expect(plan.remotes == [Remote(host: "192.0.2.1", port: 443, transport: .tcp), Remote(host: "vpn.example.com", port: 1194, transport: .udp)])
        #expect(plan.hostNames == ["vpn.example.com"])
        #expect(plan.literalEndpoints == [Endpoint(address: IPv4Address(192, 0, 2, 1), port: 443, transport: .tcp)])
        #expect(plan.problem(path: "/c.ovpn") == nil)
        #expect(plan.entries[1].description == "remote vpn.example.com 1194 udp (line 3): resolved by `vpnsup run` once the lockdown stands, each IPv4 address pinned with 1194/udp")
    }

    @Test func aFileWithoutUsableRemotesIsAConfigurationError() {
        #expect(RemotePlan(OpenVPNConfigVetting.vet("client\n", path: "/c.ovpn")).problem(path: "/c.ovpn") == "CONFIG=/c.ovpn has no remote line")
        #expect(RemotePlan(OpenVPNConfigVetting.vet("client\nproto udp6\nremote vpn.example.com\n", path: "/c.ovpn")).problem(path: "/c.ovpn")
            == "CONFIG=/c.ovpn has no usable remote: vpn.example.com 1194 udp6 (udp6 is IPv6 only, and the WAN carries IPv4 only)")
    }
}

@Suite("OpenVPN output")
struct OpenVPNOutputTests {
    @Test func theLineThatSaysWhy() {
        #expect(OpenVPNOutput.errorLine(in: [
            "2026-12-06 09:46:09 Note: --cipher is not set.",
            "Options error: Unrecognized option or missing or extra parameter(s) in /c.ovpn:6: ncp-disable (2.6.14)",
            "Use --help for more information.",
        ]) == "Options error: Unrecognized option or missing or extra parameter(s) in /c.ovpn:6: ncp-disable (2.6.14)")
        #expect(OpenVPNOutput.errorLine(in: [
            "Options error: --ca fails with 'ca.crt': No such file or directory (errno=2)",
            "Options error: Please correct these errors.",
        ]) == "Options error: --ca fails with 'ca.crt': No such file or directory (errno=2)")
        #expect(OpenVPNOutput.errorLine(in: [
            "2026-12-06 09:58:12 us=1 OpenSSL: error:0A00018E:SSL routines::ca md too weak:",
            "2026-12-06 09:58:12 Cannot load inline certificate file",
            "2026-12-06 09:58:12 Exiting due to fatal error",
        ]) == "Cannot load inline certificate file (OpenSSL: ca md too weak)")
        #expect(OpenVPNOutput.errorLine(in: ["2026-12-06 09:58:12 Initialization Sequence Completed"]) == nil)
    }

    @Test func milestones() {
        #expect(OpenVPNOutput.isVersionBanner("2026-12-06 09:38:15 OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)] [LZO]"))
        #expect(!OpenVPNOutput.isVersionBanner("2026-12-06 09:38:15 OpenVPN 2.6.14 is nice"))
        #expect(OpenVPNOutput.isPastKeyLoading("2026-12-06 09:38:34 UDPv4 link remote: [AF_INET]192.0.2.1:1194"))
        #expect(OpenVPNOutput.isPastKeyLoading("RESOLVE: Cannot resolve host address: vpn.example.com:1194 (Temporary failure in name resolution)"))
        #expect(!OpenVPNOutput.isPastKeyLoading("2026-12-06 09:38:34 WARNING: No server certificate verification method has been enabled."))
    }
}

/// A small deterministic generator (SplitMix64), so that a failure replays.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func next(below bound: Int) -> Int { Int(next() % UInt64(bound)) }
}
