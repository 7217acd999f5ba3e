import Testing
@testable import StateMachine

/// docs/security.md, "Local trust boundaries": a value echoed in an error, a log line or a status
/// stays on its line, whatever it holds.
@Suite struct DisplayEscapingTests {
    @Test func controlCharactersAndTheBackslashAreEscaped() {
        #expect(escapedForDisplay("172.22.0.1/24") == "172.22.0.1/24")
        #expect(escapedForDisplay("a\nb\rc\td\0e\\f") == #"a\nb\rc\td\0e\\f"#)
        #expect(escapedForDisplay("\u{1B}[31mred\u{7F}\u{85}\u{2028}") == #"\u{1B}[31mred\u{7F}\u{85}\u{2028}"#)
        #expect(escapedForDisplay("café ü") == "café ü")
        // Every C0 and C1 control character and both Unicode line separators go.
        let controls = (0 ..< 0x20).map { Character(Unicode.Scalar(UInt8($0))) }
            + (0x7F ... 0x9F).map { Character(Unicode.Scalar(UInt8($0))) } + ["\u{2028}", "\u{2029}"]
        for character in controls {
            let escaped = escapedForDisplay("x\(character)y")
            #expect(!escaped.unicodeScalars.contains { $0.properties.generalCategory == .control || $0 == "\u{2028}" || $0 == "\u{2029}" },
                    "\(escaped.debugDescription)")
        }
    }

    @Test func oneLineLeavesAnEscapedLineAloneAndEscapesARawOne() {
        let escaped = escapedForDisplay("a\nb")
        #expect(oneLine("quoting \(escaped)") == #"quoting a\nb"#)
        #expect(oneLine("raw a\nb \\ c") == #"raw a\nb \\ c"#)
        #expect(oneLine(#"no control, a \ stays"#) == #"no control, a \ stays"#)
    }

    /// An IP_ADDR holding a newline and a forged line after it: one line, naming the variable.
    @Test func aConfigurationErrorIsOneLine() throws {
        var values = ["CONFIG": "client.ovpn", "IP_ADDR": "172.22.0.1/24\nvpnsup: Killswitched -> TunnelUp"]
        let error = #expect(throws: ConfigurationError.self) { try Configuration(values) }
        #expect(error?.description == #"IP_ADDR=172.22.0.1/24\nvpnsup: Killswitched -> TunnelUp is not an IPv4 address with prefix length"#)
        values["IP_ADDR"] = "172.22.0.1/24"
        values["PORT_FWD"] = "172.22.0.10:80\r"
        let forward = #expect(throws: ConfigurationError.self) { try Configuration(values) }
        #expect(forward.map { !$0.description.contains("\r") } == true)
    }
}
