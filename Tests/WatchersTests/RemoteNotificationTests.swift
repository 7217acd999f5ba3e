import Testing
@testable import Watchers

/// `>REMOTE:host,port,proto`, which OpenVPN sends before each remote with `--management-query-remote`
/// (the forms below are what OpenVPN 2.6.14 printed for `remote` lines in a test run).
@Suite struct RemoteNotificationTests {
    private func parse(_ line: String) -> ManagementMessage? {
        ManagementParser.parse(line: ArraySlice(Array(line.utf8)))
    }

    @Test func realForms() {
        #expect(parse(">REMOTE:vpn.example.com,1194,udp") == .remote(host: "vpn.example.com", port: 1194, proto: "udp"))
        #expect(parse(">REMOTE:192.0.2.1,443,tcp-client") == .remote(host: "192.0.2.1", port: 443, proto: "tcp-client"))
        #expect(parse(">REMOTE:h4,5,udp4\r") == .remote(host: "h4", port: 5, proto: "udp4"))
        #expect(parse(">REMOTE:h6,7,tcp6-client") == .remote(host: "h6", port: 7, proto: "tcp6-client"))
    }

    @Test func oddForms() {
        // A port OpenVPN could not print as a number is kept as unknown, not guessed.
        #expect(parse(">REMOTE:vpn.example.com,openvpn,udp") == .remote(host: "vpn.example.com", port: nil, proto: "udp"))
        #expect(parse(">REMOTE:vpn.example.com,udp") == .remote(host: "vpn.example.com", port: nil, proto: "udp"))
        for line in [">REMOTE:", ">REMOTE:vpn.example.com", ">REMOTE:,1194,udp", ">REMOTE:vpn.example.com,1194,"] {
            #expect(parse(line) == .malformed(line), "\(line)")
        }
    }

    @Test func splitAcrossReads() {
        var parser = ManagementParser()
        #expect(parser.feed(Array(">REMOTE:vpn.lab".utf8)) == [])
        #expect(parser.feed(Array(".test,1194,udp\n>HOLD:Waiting for hold release:0\n".utf8))
            == [.remote(host: "vpn.lab.test", port: 1194, proto: "udp"), .hold("Waiting for hold release:0")])
    }
}
