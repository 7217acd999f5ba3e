import Testing
@testable import StateMachine

/// PORT_FWD_FILE (one forward per line, comments, errors naming file:line) and the diff of two
/// forward sets that a live change applies as map elements.
@Suite struct PortForwardFileTests {
    private let base = ["CONFIG": "client.ovpn", "IP_ADDR": "172.22.0.1/24", "PORT_FWD_FILE": "/etc/vpnsup/forwards"]

    private func forwards(_ text: String, portFwd: String? = nil) throws(ConfigurationError) -> [PortForward] {
        var values = base
        values["PORT_FWD"] = portFwd
        return try Configuration(values).addingPortForwards(fromFile: text).portForwards
    }

    private func error(_ text: String, portFwd: String? = nil) -> ConfigurationError? {
        do {
            _ = try forwards(text, portFwd: portFwd)
            return nil
        } catch {
            return error
        }
    }

    private func forward(_ publicPort: UInt16, _ target: String, _ port: UInt16, _ transport: TransportProtocol) -> PortForward {
        PortForward(publicPort: publicPort, target: IPv4Address(target)!, targetPort: port, transport: transport)
    }

    @Test func thePathIsKeptAndMustBeAbsolute() throws {
        #expect(try Configuration(base).portForwardFile == "/etc/vpnsup/forwards")
        #expect(try Configuration(["CONFIG": "c", "IP_ADDR": "172.22.0.1/24"]).portForwardFile == nil)
        #expect(throws: ConfigurationError("PORT_FWD_FILE", "forwards", "is not an absolute path")) {
            try Configuration(base.merging(["PORT_FWD_FILE": "forwards"]) { $1 })
        }
    }

    @Test func linesCommentsAndBlanks() throws {
        let text = """
        # forwards of the office
        8080:172.22.0.10:80/tcp
          172.22.0.11:53/udp   # DNS, trailing comment\r
        \t
        2222:172.22.0.12:22
        """
        #expect(try forwards(text) == [
            forward(8080, "172.22.0.10", 80, .tcp),
            forward(53, "172.22.0.11", 53, .udp),
            forward(2222, "172.22.0.12", 22, .tcp), forward(2222, "172.22.0.12", 22, .udp),
        ])
        #expect(try forwards("") == [])
        #expect(try forwards("# nothing yet\n\n") == [])
        // Windows line ends: "\r\n" is one Character in Swift.
        #expect(try forwards("8080:172.22.0.10:80/tcp\r\n8081:172.22.0.10:81/tcp\r\n").count == 2)
    }

    @Test func fileForwardsComeAfterPortFwdAndMayNotRepeatThem() throws {
        #expect(try forwards("8081:172.22.0.10:81/tcp", portFwd: "8080:172.22.0.10:80/tcp")
            == [forward(8080, "172.22.0.10", 80, .tcp), forward(8081, "172.22.0.10", 81, .tcp)])
        #expect(error("\n8080:172.22.0.11:80/tcp", portFwd: "8080:172.22.0.10:80/tcp")?.description ==
            "PORT_FWD_FILE=/etc/vpnsup/forwards:2 has '8080:172.22.0.11:80/tcp', which forwards 8080/tcp again, already forwarded to 172.22.0.10:80 in PORT_FWD")
    }

    @Test(arguments: [
        ("# a\n8080:10.0.0.5:80", "PORT_FWD_FILE=/etc/vpnsup/forwards:2 has '8080:10.0.0.5:80', which targets 10.0.0.5, outside the LAN 172.22.0.0/24"),
        ("172.22.0.10:0", "PORT_FWD_FILE=/etc/vpnsup/forwards:1 has '172.22.0.10:0', which has a port outside 1...65535"),
        ("172.22.0.10:80/sctp", "PORT_FWD_FILE=/etc/vpnsup/forwards:1 has '172.22.0.10:80/sctp', which names a protocol other than tcp or udp"),
        ("8080:172.22.0.10:80 8081:172.22.0.10:81", "PORT_FWD_FILE=/etc/vpnsup/forwards:1 has '8080:172.22.0.10:80 8081:172.22.0.10:81', which is more than one forward (one per line)"),
        ("1:2:3:4", "PORT_FWD_FILE=/etc/vpnsup/forwards:1 has '1:2:3:4', which is not [PUBLIC_PORT:]IP:PORT[/tcp|/udp]"),
        ("8080:172.22.0.10:80/tcp\n\n8080:172.22.0.10:80/tcp", "PORT_FWD_FILE=/etc/vpnsup/forwards:3 has '8080:172.22.0.10:80/tcp', which repeats the forward of 8080/tcp on line 1"),
        ("8080:172.22.0.10:80\n8080:172.22.0.11:80/udp", "PORT_FWD_FILE=/etc/vpnsup/forwards:2 has '8080:172.22.0.11:80/udp', which forwards 8080/udp again, already forwarded to 172.22.0.10:80 on line 1"),
    ])
    func badLinesNameTheFileAndLine(text: String, message: String) {
        let e = error(text)
        #expect(e?.variable == "PORT_FWD_FILE")
        #expect(e?.description == message)
    }

    @Test func tenThousandLines() throws {
        let lines = (0..<10_000).map { index in "\(20_000 + index):172.22.\(index / 250).\(index % 250 + 2):\(1024 + index)/\(index % 3 == 0 ? "udp" : "tcp")" }
        var values = base
        values["IP_ADDR"] = "172.22.0.1/16"
        let parsed = try Configuration(values).addingPortForwards(fromFile: lines.joined(separator: "\n") + "\n").portForwards
        #expect(parsed.count == 10_000)
        #expect(parsed.last == forward(29_999, "172.22.39.251", 11_023, .udp))
    }

    // MARK: - The diff

    @Test func diffDeletesAndAddsOnlyWhatChanged() {
        let kept = forward(8080, "172.22.0.10", 80, .tcp)
        let retargeted = forward(8081, "172.22.0.10", 81, .tcp)
        let gone = forward(53, "172.22.0.11", 53, .udp)
        let old = [kept, retargeted, gone, forward(54, "172.22.0.11", 54, .udp)]
        let new = [kept, forward(8081, "172.22.0.12", 81, .tcp), forward(54, "172.22.0.11", 54, .udp), forward(9000, "172.22.0.13", 9000, .tcp)]
        let diff = PortForwardDiff(from: old, to: new)
        #expect(diff.removed == [gone, retargeted])
        #expect(diff.added == [forward(8081, "172.22.0.12", 81, .tcp), forward(9000, "172.22.0.13", 9000, .tcp)])
        #expect(!diff.needsFullCommit)
        #expect(!diff.isEmpty)
        #expect(PortForwardDiff(from: old, to: old.reversed()).isEmpty)
    }

    @Test func aMapAppearingOrVanishingNeedsAFullCommit() {
        let tcp = forward(8080, "172.22.0.10", 80, .tcp), udp = forward(53, "172.22.0.11", 53, .udp)
        #expect(PortForwardDiff(from: [tcp], to: [tcp, udp]).needsFullCommit)
        #expect(PortForwardDiff(from: [tcp, udp], to: [udp]).needsFullCommit)
        #expect(PortForwardDiff(from: [], to: [tcp]).needsFullCommit)
        #expect(!PortForwardDiff(from: [tcp], to: [forward(8081, "172.22.0.10", 81, .tcp)]).needsFullCommit)
    }

    /// Applying the diff to the old set gives the new one, for random sets; and the maps the diff's
    /// side computes are the ones the ruleset declares.
    @Test func diffAppliedToTheOldSetGivesTheNewOne() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            func randomSet() -> [PortForward] {
                var byKey: [String: PortForward] = [:]
                for _ in 0..<Int.random(in: 0...40, using: &generator) {
                    let candidate = forward(UInt16.random(in: 1...60, using: &generator), "172.22.0.\(Int.random(in: 2...5, using: &generator))",
                                            UInt16.random(in: 1...3, using: &generator), Bool.random(using: &generator) ? .tcp : .udp)
                    byKey["\(candidate.publicPort)/\(candidate.transport)"] = candidate
                }
                return Array(byKey.values)
            }
            let old = randomSet(), new = randomSet()
            let diff = PortForwardDiff(from: old, to: new)
            var result = Set(old)
            result.subtract(diff.removed)
            // Deletes first: an add never meets a key still present.
            let keys = Set(result.map { "\($0.publicPort)/\($0.transport)" })
            #expect(diff.added.allSatisfy { !keys.contains("\($0.publicPort)/\($0.transport)") })
            result.formUnion(diff.added)
            #expect(result == Set(new))
            let layout = NetworkLayout(lanInterface: "eth1", wanInterface: "eth0", tunnelInterface: "tun0", endpoints: [],
                                       transportMark: 1, dns: nil, portForwards: new, lanGateway: nil)
            #expect(ForwardMap.maps(for: new) == layout.forwardMaps)
        }
    }
}
