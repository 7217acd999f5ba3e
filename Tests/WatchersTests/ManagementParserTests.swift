import StateMachine
import Testing
@testable import Watchers

/// Transcripts as OpenVPN 2.6 writes them (CRLF line ends). `realSession` was recorded from
/// OpenVPN 2.6.14 (`--dev null`, TLS peer on localhost); the others follow management-notes.txt.
enum Transcripts {
    static let realSession = """
        >INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r
        >HOLD:Waiting for hold release:0\r
        SUCCESS: real-time state notification set to ON\r
        1795841311,CONNECTING,,,,,,\r
        END\r
        SUCCESS: hold release succeeded\r
        >STATE:1795841311,WAIT,,,,,,\r
        >STATE:1795841311,AUTH,,,,,,\r
        >STATE:1795841312,CONNECTED,SUCCESS,10.8.0.6,127.0.0.1,41194,127.0.0.1,41195\r
        SUCCESS: signal SIGTERM thrown\r
        >STATE:1795841316,EXITING,SIGTERM,,,,,\r

        """

    static let clientSession = """
        >INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r
        >HOLD:Waiting for hold release:0\r
        SUCCESS: hold release succeeded\r
        >PASSWORD:Need 'Auth' username/password\r
        SUCCESS: 'Auth' username entered, but not yet verified\r
        SUCCESS: 'Auth' password entered, but not yet verified\r
        >STATE:1700000000,RESOLVE,,,,,,,\r
        >STATE:1700000000,CONNECTING,,,,,,,\r
        >STATE:1700000001,WAIT,,,,,,,\r
        >STATE:1700000001,AUTH,,,,,,,\r
        >STATE:1700000002,GET_CONFIG,,,,,,,\r
        >STATE:1700000002,ASSIGN_IP,,10.8.0.6,,,,,\r
        >STATE:1700000002,ADD_ROUTES,,,,,,,\r
        >STATE:1700000002,CONNECTED,SUCCESS,10.8.0.6,192.0.2.1,1194,,,\r
        >BYTECOUNT:12345,6789\r
        >STATE:1700000100,RECONNECTING,ping-restart,,,,,,\r
        >PASSWORD:Verification Failed: 'Auth'\r
        >FATAL:Cannot resolve host address: vpn.example.com:1194 (Name or service not known)\r
        >STATE:1700000101,EXITING,auth-failure,,,,,,\r

        """

    /// `state on all` answered while a transition happens: the notification comes before the
    /// history it is part of, and the body ends in END.
    static let historyWithNotification = """
        SUCCESS: real-time state notification set to ON\r
        >STATE:1700000300,RECONNECTING,ping-restart,,,,,,\r
        1700000000,CONNECTING,,,,,,,\r
        1700000002,CONNECTED,SUCCESS,10.8.0.6,192.0.2.1,1194,,,\r
        1700000300,RECONNECTING,ping-restart,,,,,,\r
        END\r
        >STATE:1700000301,WAIT,,,,,,,\r

        """

    static let byName = [
        "realSession": realSession, "clientSession": clientSession, "historyWithNotification": historyWithNotification,
    ]
}

private func parse(_ text: String) -> [ManagementMessage] {
    var parser = ManagementParser()
    return parser.feed(Array(text.utf8))
}

private func parseByteByByte(_ bytes: [UInt8], maxLineLength: Int = ManagementParser.defaultMaxLineLength) -> [ManagementMessage] {
    var parser = ManagementParser(maxLineLength: maxLineLength)
    return bytes.flatMap { parser.feed([$0]) }
}

private func state(_ time: Int64, _ state: OpenVPNState, _ detail: String = "", ip: String = "",
                   remote: String = "", port: String = "", local: String = "", localPort: String = "") -> ManagementMessage {
    .state(StateRecord(time: time, state: state, detail: detail, tunnelIPv4: ip, remoteAddress: remote,
                       remotePort: port, localAddress: local, localPort: localPort))
}

@Suite struct ManagementParserTests {
    @Test func realSessionFromOpenVPN26() {
        #expect(parse(Transcripts.realSession) == [
            .info("OpenVPN Management Interface Version 5 -- type 'help' for more info"),
            .hold("Waiting for hold release:0"),
            .success("real-time state notification set to ON"),
            state(1_795_841_311, .connecting),
            .endOfReply,
            .success("hold release succeeded"),
            state(1_795_841_311, .wait),
            state(1_795_841_311, .auth),
            state(1_795_841_312, .connected, "SUCCESS", ip: "10.8.0.6", remote: "127.0.0.1", port: "41194",
                  local: "127.0.0.1", localPort: "41195"),
            .success("signal SIGTERM thrown"),
            state(1_795_841_316, .exiting, "SIGTERM"),
        ])
    }

    @Test func clientSessionStateSequence() {
        let messages = parse(Transcripts.clientSession)
        #expect(messages.count == 19)
        #expect(messages.filter { if case .malformed = $0 { true } else { false } }.isEmpty)
        #expect(messages[3] == .passwordNeeded(type: "Auth"))
        let states = messages.compactMap { message -> OpenVPNState? in
            if case .state(let record) = message { record.state } else { nil }
        }
        #expect(states == [.resolve, .connecting, .wait, .auth, .getConfig, .assignIP, .addRoutes, .connected,
                           .reconnecting, .exiting])
        #expect(messages[8] == state(1_700_000_001, .wait))
        #expect(messages[11] == state(1_700_000_002, .assignIP, ip: "10.8.0.6"))
        #expect(messages[13] == state(1_700_000_002, .connected, "SUCCESS", ip: "10.8.0.6", remote: "192.0.2.1", port: "1194"))
        #expect(messages[14] == .byteCount(received: 12345, sent: 6789))
        #expect(messages[15] == state(1_700_000_100, .reconnecting, "ping-restart"))
        #expect(messages[16] == .passwordVerificationFailed(type: "Auth"))
        #expect(messages[17] == .fatal("Cannot resolve host address: vpn.example.com:1194 (Name or service not known)"))
        #expect(messages[18] == state(1_700_000_101, .exiting, "auth-failure"))
    }

    @Test func historyReplyInterleavedWithNotification() {
        #expect(parse(Transcripts.historyWithNotification) == [
            .success("real-time state notification set to ON"),
            state(1_700_000_300, .reconnecting, "ping-restart"),
            state(1_700_000_000, .connecting),
            state(1_700_000_002, .connected, "SUCCESS", ip: "10.8.0.6", remote: "192.0.2.1", port: "1194"),
            state(1_700_000_300, .reconnecting, "ping-restart"),
            .endOfReply,
            state(1_700_000_301, .wait),
        ])
    }

    @Test(arguments: ["realSession", "clientSession", "historyWithNotification"])
    func anySplitGivesTheSameMessages(_ name: String) throws {
        let transcript = try #require(Transcripts.byName[name])
        let bytes = Array(transcript.utf8)
        let whole = parse(transcript)
        #expect(parseByteByByte(bytes) == whole)
        var generator = SplitMix(seed: UInt64(bytes.count))
        for _ in 0..<20 {
            var parser = ManagementParser()
            var messages: [ManagementMessage] = []
            var offset = 0
            while offset < bytes.count {
                let end = min(bytes.count, offset + Int(generator.next() % 40))
                messages += parser.feed(bytes[offset..<end])
                offset = end
            }
            #expect(messages == whole)
        }
    }

    @Test func crlfAndLFAreEquivalent() {
        let lf = Transcripts.clientSession.replacingCRLF()
        #expect(!lf.utf8.contains(UInt8(ascii: "\r")))
        #expect(parse(lf) == parse(Transcripts.clientSession))
        // Only one trailing CR belongs to the line end.
        #expect(parse(">INFO:a\r\r\n") == [.info("a\r")])
    }

    @Test func partialLineWaitsForItsEnd() {
        var parser = ManagementParser()
        #expect(parser.feed(Array(">HOLD:Waiting for hold".utf8)).isEmpty)
        #expect(parser.feed(Array(" release:0\r".utf8)).isEmpty)
        #expect(parser.feed([UInt8(ascii: "\n")]) == [.hold("Waiting for hold release:0")])
        #expect(parser.feed(Array("SUCCESS: x".utf8)).isEmpty)
        #expect(parser.finish() == [.malformed("unterminated line: SUCCESS: x")])
        #expect(parser.finish().isEmpty)
    }

    @Test func overlongLineIsDiscardedAndReportedOnce() {
        let long = ">LOG:" + String(repeating: "x", count: ManagementParser.defaultMaxLineLength + 10_000)
        let text = ">INFO:before\r\n" + long + "\r\n>INFO:after\r\n"
        let messages = parse(text)
        #expect(messages.count == 3)
        #expect(messages.first == .info("before"))
        #expect(messages.last == .info("after"))
        guard case .malformed(let report) = messages[1] else {
            Issue.record("expected .malformed, got \(messages[1])")
            return
        }
        #expect(report.hasPrefix("line longer than 65536 bytes discarded: >LOG:xxx"))
        #expect(report.utf8.count < 200)
        #expect(parseByteByByte(Array(text.utf8)) == messages)
    }

    @Test func lineLengthLimitIsExact() {
        var parser = ManagementParser(maxLineLength: 8)
        #expect(parser.feed(Array(">INFO:ab\n".utf8)) == [.info("ab")])        // 8 bytes: kept
        #expect(parser.feed(Array(">INFO:abc\n>INFO:z\n".utf8)) == [           // 9 bytes: dropped
            .malformed("line longer than 8 bytes discarded: >INFO:ab"), .info("z"),
        ])
    }

    @Test func garbageAndInvalidUTF8NeverStopTheStream() {
        let garbage: [UInt8] = [0xff, 0xfe, 0x41, 0x0a] + Array(">STATE:\u{7f}\n".utf8)
            + [0x3e, 0x4c, 0x4f, 0x47, 0x3a, 0xc3, 0x28, 0x0d, 0x0a]   // ">LOG:" + a broken 2-byte sequence
            + [0x00, 0x0a] + Array(">INFO:still here\n".utf8)
        var parser = ManagementParser()
        let messages = parser.feed(garbage)
        #expect(messages.count == 5)
        #expect(messages[0] == .malformed("\u{FFFD}\u{FFFD}A"))
        #expect(messages[1] == .malformed(">STATE:\u{7f}"))
        #expect(messages[2] == .malformed(">LOG:\u{FFFD}("))
        #expect(messages[3] == .replyLine("\0"))
        #expect(messages[4] == .info("still here"))
        #expect(parseByteByByte(garbage) == messages)
    }

    @Test func randomBytesNeverTrapAndSplitDoesNotMatter() {
        var generator = SplitMix(seed: 42)
        let alphabet = Array(">:,\r\n\0ABCSTEND0123'_-".utf8) + [0xc3, 0xff, 0x80]
        for _ in 0..<200 {
            let bytes = (0..<Int(generator.next() % 300)).map { _ in
                generator.next() % 3 == 0 ? UInt8(truncatingIfNeeded: generator.next()) : alphabet[Int(generator.next() % UInt64(alphabet.count))]
            }
            var parser = ManagementParser(maxLineLength: 32)
            let whole = parser.feed(bytes) + parser.finish()
            var bytewise = ManagementParser(maxLineLength: 32)
            #expect(bytes.flatMap { bytewise.feed([$0]) } + bytewise.finish() == whole)
        }
    }

    @Test func passwordNotifications() {
        #expect(parse(">PASSWORD:Need 'Private Key' password\n") == [.passwordNeeded(type: "Private Key")])
        #expect(parse(">PASSWORD:Need 'Auth' username/password SC:1,Please enter token PIN\n")
            == [.passwordNeeded(type: "Auth")])
        #expect(parse(">PASSWORD:Verification Failed: 'Auth' ['CRV1:R,E:Om01u7Fh4:Y3Ix:Please enter token PIN']\n")
            == [.passwordVerificationFailed(type: "Auth")])
        #expect(parse(">PASSWORD:Verification Failed: 'custom server-generated string'\n")
            == [.passwordVerificationFailed(type: "custom server-generated string")])
        #expect(parse(">PASSWORD:Auth-Token:c2VjcmV0\n") == [.other(kind: "PASSWORD", text: "Auth-Token:<redacted>")])
        #expect(parse(">PASSWORD:Need 'Auth\n") == [.other(kind: "PASSWORD", text: "Need 'Auth")])
    }

    @Test func otherNotifications() {
        #expect(parse(">LOG:1700000000,W,WARNING: something, with commas\n")
            == [.log("1700000000,W,WARNING: something, with commas")])
        #expect(parse(">REMOTE:vpn.example.com,1194,udp\n") == [.remote(host: "vpn.example.com", port: 1194, proto: "udp")])
        #expect(parse(">REMOTE:2001:db8::1,443,tcp-client\n") == [.remote(host: "2001:db8::1", port: 443, proto: "tcp-client")])
        #expect(parse(">REMOTE:host,99999,udp\n") == [.remote(host: "host", port: nil, proto: "udp")])
        #expect(parse(">REMOTE:host,udp\n") == [.remote(host: "host", port: nil, proto: "udp")])
        #expect(parse(">REMOTE:udp\n") == [.malformed(">REMOTE:udp")])
        #expect(parse(">NEED-OK:Need 'token-insertion-request' confirmation MSG:Please insert your token\n")
            == [.needOK("Need 'token-insertion-request' confirmation MSG:Please insert your token")])
        #expect(parse(">NEED-STR:Need 'name' input MSG:Please specify your name\n")
            == [.needStr("Need 'name' input MSG:Please specify your name")])
        #expect(parse(">NOTIFY:info,remote-exit,EXIT\n") == [.notify("info,remote-exit,EXIT")])
        #expect(parse(">ECHO:1700000000,forget-passwords\n") == [.echo("1700000000,forget-passwords")])
        #expect(parse(">INFOMSG:OPEN_URL:https://example.com/auth\n")
            == [.other(kind: "INFOMSG", text: "OPEN_URL:https://example.com/auth")])
        #expect(parse(">BYTECOUNT:18446744073709551615,0\n") == [.byteCount(received: .max, sent: 0)])
        #expect(parse(">BYTECOUNT:1,2,3\n") == [.malformed(">BYTECOUNT:1,2,3")])
        #expect(parse(">BYTECOUNT:-1,2\n") == [.malformed(">BYTECOUNT:-1,2")])
        #expect(parse(">no colon\n") == [.malformed(">no colon")])
        #expect(parse(">:empty kind\n") == [.malformed(">:empty kind")])
        #expect(parse(">lower:case\n") == [.malformed(">lower:case")])
    }

    @Test func stateFieldVariants() {
        // With a tunnel IPv6 address: nine fields.
        #expect(parse(">STATE:1700000002,CONNECTED,SUCCESS,10.8.0.6,192.0.2.1,1194,198.51.100.7,51000,fd00::6\n") == [
            .state(StateRecord(time: 1_700_000_002, state: .connected, detail: "SUCCESS", tunnelIPv4: "10.8.0.6",
                               remoteAddress: "192.0.2.1", remotePort: "1194", localAddress: "198.51.100.7",
                               localPort: "51000", tunnelIPv6: "fd00::6")),
        ])
        // A description with commas keeps the six address fields at the end.
        #expect(parse(">STATE:1,EXITING,a,b,c,,,,,,\n") == [state(1, .exiting, "a,b,c")])
        #expect(parse(">STATE:1700000000,AUTH_PENDING,timeout 60,,,,,\n") == [state(1_700_000_000, .authPending, "timeout 60")])
        #expect(parse(">STATE:1700000000,TCP_CONNECT,,,,,,\n") == [state(1_700_000_000, .tcpConnect)])
        #expect(parse(">STATE:1,INITIAL\n") == [state(1, .other("INITIAL"))])
        #expect(parse(">STATE:,CONNECTING,,,,,,\n") == [.state(StateRecord(time: nil, state: .connecting))])
        #expect(parse(">STATE:soon,CONNECTING\n") == [.malformed(">STATE:soon,CONNECTING")])
        #expect(parse(">STATE:1\n") == [.malformed(">STATE:1")])
        #expect(parse(">STATE:1,connected\n") == [.malformed(">STATE:1,connected")])
        #expect(parse(">STATE:99999999999999999999,CONNECTED\n") == [.malformed(">STATE:99999999999999999999,CONNECTED")])
    }

    @Test func replyBodiesThatAreNotStateHistory() {
        let version = "OpenVPN Version: OpenVPN 2.6.14 x86_64-pc-linux-gnu\r\nManagement Version: 5\r\nEND\r\n"
        #expect(parse(version) == [
            .replyLine("OpenVPN Version: OpenVPN 2.6.14 x86_64-pc-linux-gnu"), .replyLine("Management Version: 5"), .endOfReply,
        ])
        // `log all` lines are time,FLAGS,text: not states even when the text has many commas.
        #expect(parse("1700000000,I,a,b,c,d,e,f,g\n1700000000,NW,x\n") == [
            .replyLine("1700000000,I,a,b,c,d,e,f,g"), .replyLine("1700000000,NW,x"),
        ])
        #expect(parse("Updated,2024-01-01 00:00:00\nTUN/TAP read bytes,123\n") == [
            .replyLine("Updated,2024-01-01 00:00:00"), .replyLine("TUN/TAP read bytes,123"),
        ])
        #expect(parse("SUCCESS:pid=1234\nERROR: unknown command, enter 'help' for more options\n") == [
            .success("pid=1234"), .error("unknown command, enter 'help' for more options"),
        ])
        #expect(parse("\r\n\n").isEmpty)
    }

    @Test func quotedValues() {
        #expect(managementQuoted("secret") == "\"secret\"")
        #expect(managementQuoted("") == "\"\"")
        #expect(managementQuoted("pa ss'word") == "\"pa ss'word\"")
        #expect(managementQuoted("a\"b") == #""a\"b""#)
        #expect(managementQuoted(#"back\slash"#) == #""back\\slash""#)
        #expect(managementQuoted(#"\""#) == #""\\\"""#)
        #expect(managementQuoted("pässwörd✓") == "\"pässwörd✓\"")
        #expect(managementQuoted("SCRV1:YmFy:ODY3NTMwOQ==") == "\"SCRV1:YmFy:ODY3NTMwOQ==\"")
        #expect(managementQuoted("x\nsignal SIGTERM") == nil)
        #expect(managementQuoted("x\r") == nil)
        #expect(managementQuoted("x\r\n") == nil)
        #expect(managementQuoted("nul\0byte") == nil)
    }
}

/// A small deterministic generator, so failures reproduce.
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
}

extension String {
    func replacingCRLF() -> String {
        String(decoding: Array(utf8).filter { $0 != UInt8(ascii: "\r") }, as: UTF8.self)
    }
}
