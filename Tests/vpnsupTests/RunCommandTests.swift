import Foundation
import Testing
import StateMachine
import TestSupport
@testable import Supervisor
@testable import vpnsup

/// Root tests only in the private network namespace `make test` runs them in (`unshare --net`):
/// never in the machine's own namespace, where a lockdown would cut the machine off.
let isolatedRoot = IsolatedNetworkNamespace.isRootInside

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

struct Outcome {
    var status: Int32
    var stdout: String
    var stderr: String
}

func execute(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> Outcome {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = environment
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Both pipes at once: a child that fills stderr (OpenVPN's lines in vpnsup's log) while
    // stdout is read to its end would otherwise block for ever.
    let errors = Collected()
    let drained = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
        errors.data = err.fileHandleForReading.readDataToEndOfFile()
        drained.signal()
    }
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    drained.wait()
    let stderr = errors.data
    process.waitUntilExit()
    return Outcome(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                   stderr: String(decoding: stderr, as: UTF8.self))
}

/// What one thread reads while another waits for it (the semaphore orders the two).
private final class Collected: @unchecked Sendable {
    var data = Data()
}

func vpnsupBinary() -> String {
    ProcessInfo.processInfo.environment["VPNSUP"] ?? repositoryRoot.appendingPathComponent(".build/debug/vpnsup").path
}

/// Runs `vpnsup` in a network namespace of its own (so that tests running in parallel never share
/// a ruleset) holding the veth pair the environment names, then saves that namespace's
/// `inet vpnsup` table next to the other scratch files.
func runIsolated(_ arguments: [String], environment: [String: String], tableTo table: URL) throws -> Outcome {
    let script = """
    ip link add vsteth0 type veth peer name vsteth1 || exit 99
    "$@"; code=$?
    nft list table inet vpnsup > "$0" 2>&1
    exit $code
    """
    return try execute("/usr/bin/unshare", ["--net", "--", "/bin/sh", "-c", script, table.path, vpnsupBinary()] + arguments,
                       environment: environment)
}

@Suite
struct RunCommandTests {
    static func scratch() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vpnsup-run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try clientFile("remote 192.0.2.1 1194\n", in: directory)
            .write(to: directory.appendingPathComponent("client.ovpn"), atomically: true, encoding: .utf8)
        try "user\npass\n".write(to: directory.appendingPathComponent("credentials"), atomically: true, encoding: .utf8)
        return directory
    }

    /// A client file OpenVPN 2.6 accepts up to its management hold (it needs a CA: any directory
    /// as `capath` will do, since nothing ever connects), so that `run` keeps it running.
    static func clientFile(_ remotes: String, in directory: URL) -> String {
        "client\n\(remotes)capath \(directory.path)\n"
    }

    static func environment(_ directory: URL, _ overrides: [String: String]) -> [String: String] {
        var environment = [
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CONFIG": "client.ovpn", "CONFIG_DIR": directory.path, "IP_ADDR": "172.22.0.1/24",
            "LAN_IF": "vsteth1", "WAN_IF": "vsteth0",
            "CREDENTIALS_FILE": directory.appendingPathComponent("credentials").path,
            "RUNTIME_DIR": directory.appendingPathComponent("run").path,
        ]
        for (key, value) in overrides { environment[key] = value }
        return environment
    }

    static let badInputs: [(variables: [String: String], line: String)] = [
        (["IP_ADDR": "garbage"], "IP_ADDR=garbage is not an IPv4 address with prefix length"),
        (["IP_ADDR": "172.22.0.1"], "IP_ADDR=172.22.0.1 is not an IPv4 address with prefix length"),
        (["IP_ADDR": "172.22.0.0/24"], "IP_ADDR=172.22.0.0/24 is the network or broadcast address of its subnet"),
        (["DNS": "1.1.1"], "DNS=1.1.1 is not an IPv4 address"),
        (["LAN_IF": "eth-far-too-long0"], "LAN_IF=eth-far-too-long0 is not an interface name: 1 to 15 bytes"),
        (["LAN_IF": "nosuch0"], "LAN_IF=nosuch0 names no interface in this network namespace"),
        (["PORT_FWD": "172.22.0.128:70000"], "PORT_FWD=172.22.0.128:70000 has '172.22.0.128:70000', which has a port outside 1...65535"),
        (["CONFIG": "missing.ovpn"], "CONFIG=<dir>/missing.ovpn cannot be read: open: No such file or directory"),
        (["CREDENTIALS_FILE": "/nonexistent/credentials"], "CREDENTIALS_FILE=/nonexistent/credentials cannot be read: open: No such file or directory"),
    ]

    /// The error is the last line on stderr; anything before it is the log of the lockdown commit.
    static func lastLine(_ text: String) -> String? {
        text.split(separator: "\n").last.map(String.init)
    }

    @Test(.enabled(if: isolatedRoot), arguments: badInputs.indices)
    func badConfigurationExits78AfterTheLockdown(index: Int) throws {
        let (variables, expected) = Self.badInputs[index]
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let tableFile = directory.appendingPathComponent("table")

        let outcome = try runIsolated(["run"], environment: Self.environment(directory, variables), tableTo: tableFile)

        #expect(outcome.status == 78)
        #expect(Self.lastLine(outcome.stderr) == expected.replacingOccurrences(of: "<dir>", with: directory.path))
        #expect(!outcome.stderr.contains("error"), "only the configuration error is reported")
        let table = try String(contentsOf: tableFile, encoding: .utf8)
        #expect(table.contains("hook forward priority filter; policy drop;"),
                "the lockdown table must be committed before the configuration is judged")
        #expect(table.contains("oifname \"lo\" accept"))
        #expect(!table.contains("vsteth0"), "the lockdown names no interface but loopback")
    }

    @Test(.enabled(if: isolatedRoot))
    func flagsWinOverTheEnvironment() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let outcome = try runIsolated(["run", "--ip-addr", "not-an-address"], environment: Self.environment(directory, [:]),
                                      tableTo: directory.appendingPathComponent("table"))
        #expect(outcome.status == 78)
        #expect(Self.lastLine(outcome.stderr) == "IP_ADDR=not-an-address is not an IPv4 address with prefix length")
    }

    /// `vpnsup run` alone skips the argument parser (main.swift); given the same environment it
    /// must end exactly as a parsed `run` does.
    @Test(.enabled(if: isolatedRoot))
    func runAloneEndsAsAParsedRunDoes() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let variables = ["IP_ADDR": "172.22.0.1/33"]
        let alone = try runIsolated(["run"], environment: Self.environment(directory, variables),
                                    tableTo: directory.appendingPathComponent("table-alone"))
        let parsed = try runIsolated(["run", "--"], environment: Self.environment(directory, variables),
                                     tableTo: directory.appendingPathComponent("table-parsed"))
        #expect(alone.status == 78)
        #expect(parsed.status == alone.status)
        #expect(Self.lastLine(alone.stderr) == "IP_ADDR=172.22.0.1/33 is not an IPv4 address with prefix length")
        #expect(Self.lastLine(parsed.stderr) == Self.lastLine(alone.stderr))
        #expect(try String(contentsOf: directory.appendingPathComponent("table-alone"), encoding: .utf8)
            == String(contentsOf: directory.appendingPathComponent("table-parsed"), encoding: .utf8))
    }

    @Test func statusWithoutSupervisorSaysSoAndExits69() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vpnsup-none-\(UUID().uuidString)")
        let outcome = try execute(vpnsupBinary(), ["status", "--runtime-dir", directory.path])
        #expect(outcome.status == 69)
        #expect(outcome.stderr.contains("no supervisor answers at \(directory.path)/status.sock"))
    }
}

struct StatusReportTests {
    @Test func humanReportNamesStateReasonAndTransitions() {
        var snapshot = StatusSnapshot(since: "2026-11-28T05:00:00.000Z", pid: 42, startedAt: "2026-11-28T04:59:59.000Z")
        snapshot.state = "Killswitched"
        snapshot.reason = "authentication failed: the server rejected the credentials"
        snapshot.policy = "lockdown"
        snapshot.endpoints = ["192.0.2.1:1194/udp"]
        snapshot.transitions = [.init(at: "2026-11-28T05:00:00.000Z", from: "TunnelConnecting", to: "Killswitched",
                                      event: "credentialsRejected", reason: snapshot.reason)]
        let text = StatusReport.human(snapshot)
        #expect(text.contains("state       Killswitched since 2026-11-28T05:00:00.000Z"))
        #expect(text.contains("reason      authentication failed: the server rejected the credentials"))
        #expect(text.contains("kill switch lockdown ruleset committed"))
        #expect(text.contains("TunnelConnecting -> Killswitched  on credentialsRejected"))
    }

    @Test func humanReportSumsWhatTheKillSwitchBlocked() {
        var snapshot = StatusSnapshot(since: "2026-11-28T05:00:00.000Z", pid: 42, startedAt: "2026-11-28T04:59:59.000Z")
        snapshot.blocked = ["forward": .init(packets: 12, bytes: 840), "output": .init(packets: 3, bytes: 180)]
        #expect(StatusReport.human(snapshot).contains("blocked     15 packets, 1020 bytes (forward 12, output 3)"))
        snapshot.blocked = nil
        #expect(!StatusReport.human(snapshot).contains("blocked"))
    }

    @Test func humanReportCountsRepairs() {
        var snapshot = StatusSnapshot(since: "2026-11-28T05:00:00.000Z", pid: 42, startedAt: "2026-11-28T04:59:59.000Z")
        #expect(StatusReport.human(snapshot).contains("repairs     none (no outside change to the table)"))
        snapshot.firewallRepairs = 2
        snapshot.lastRepair = .init(at: "2026-11-28T05:01:00.000Z", change: "table inet vpnsup: table deleted by nft (pid 7)",
                                    policy: "up", milliseconds: 3.25)
        #expect(StatusReport.human(snapshot).contains(
            "repairs     2, last at 2026-11-28T05:01:00.000Z: table inet vpnsup: table deleted by nft (pid 7); up re-committed in 3.25 ms"))
        // An older supervisor's JSON has neither field: no line, no failure.
        snapshot.firewallRepairs = nil
        #expect(!StatusReport.human(snapshot).contains("repairs"))
    }

    @Test func jsonCarriesRepairs() throws {
        let board = StatusBoard(startedAt: Date(timeIntervalSince1970: 0))
        var object = try JSONSerialization.jsonObject(with: Data(board.json())) as? [String: Any]
        #expect(object?["firewallRepairs"] as? Int == 0)
        #expect(object?["lastRepair"] == nil)
        board.update {
            $0.firewallRepairs = 1
            $0.lastRepair = .init(at: "t", change: "table inet vpnsup: table deleted by nft (pid 7)", policy: "lockdown", milliseconds: 1.5)
        }
        object = try JSONSerialization.jsonObject(with: Data(board.json())) as? [String: Any]
        let repair = try #require(object?["lastRepair"] as? [String: Any])
        #expect(object?["firewallRepairs"] as? Int == 1)
        #expect(repair["change"] as? String == "table inet vpnsup: table deleted by nft (pid 7)")
        #expect(repair["milliseconds"] as? Double == 1.5)
        #expect(repair["policy"] as? String == "lockdown")
    }

    @Test func healthIsTunnelUpAndNothingElse() {
        var snapshot = StatusSnapshot(since: "2026-11-28T05:00:00.000Z", pid: 42, startedAt: "2026-11-28T04:59:59.000Z")
        for state in State.allCases {
            snapshot.state = state.rawValue
            #expect(HealthVerdict.healthy(snapshot) == (state == .tunnelUp), "\(state)")
        }
        snapshot.state = "Degraded"
        snapshot.reason = "OpenVPN reports RECONNECTING"
        #expect(HealthVerdict.text(snapshot) == "unhealthy: Degraded since 2026-11-28T05:00:00.000Z: OpenVPN reports RECONNECTING")
        snapshot.state = "TunnelUp"
        snapshot.tunnelAddress = "10.8.0.2"
        #expect(HealthVerdict.text(snapshot) == "healthy: TunnelUp since 2026-11-28T05:00:00.000Z, tunnel 10.8.0.2")
    }

    @Test func healthWithoutSupervisorIsUnhealthy() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vpnsup-none-\(UUID().uuidString)")
        let outcome = try execute(vpnsupBinary(), ["health", "--runtime-dir", directory.path])
        #expect(outcome.status == 1)
        #expect(outcome.stdout.hasPrefix("unhealthy: no supervisor answers at \(directory.path)/status.sock"))
    }

    @Test func jsonCarriesStateAndSince() throws {
        let board = StatusBoard(startedAt: Date(timeIntervalSince1970: 0))
        board.update { $0.recordTransition(from: .initial, to: .addressAssigned, cause: "lanAddressPresent", reason: nil,
                                           at: StatusBoard.timestamp(Date())) }
        let object = try JSONSerialization.jsonObject(with: Data(board.json())) as? [String: Any]
        #expect(object?["state"] as? String == "AddressAssigned")
        let since = try #require(object?["since"] as? String)
        #expect(since.hasSuffix("Z") && since.contains("T"))
        #expect((object?["transitions"] as? [[String: Any]])?.first?["event"] as? String == "lanAddressPresent")
    }
}

/// `vpnsup rules`: the dry run, which needs no root and no interfaces.
struct RulesCommandTests {
    static let configuration = "client\nremote 192.0.2.1 1194\nremote vpn.example.net 443 tcp\n"

    static func scratch() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vpnsup-rules-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try configuration.write(to: directory.appendingPathComponent("client.ovpn"), atomically: true, encoding: .utf8)
        return directory
    }

    static func environment(_ directory: URL) -> [String: String] {
        ["CONFIG": "client.ovpn", "CONFIG_DIR": directory.path, "IP_ADDR": "172.22.0.1/24", "DNS": "10.8.0.1",
         "PORT_FWD": "8080:172.22.0.10:80/tcp,172.22.0.11:5000", "LAN_IF": "lan0", "WAN_IF": "wan0"]
    }

    @Test func printsTheUpRulesetByDefault() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let outcome = try execute(vpnsupBinary(), ["rules"], environment: Self.environment(directory))
        #expect(outcome.status == 0, "\(outcome.stderr)")
        let lines = outcome.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(lines.contains("# remote 192.0.2.1 1194 udp (line 2): pinned as 192.0.2.1:1194/udp"))
        #expect(lines.contains("# remote vpn.example.net 443 tcp-client (line 3): resolved by `vpnsup run` once the lockdown stands, each IPv4 address pinned with 443/tcp"))
        #expect(lines.contains("oifname \"wan0\" meta mark 0x76706e01 ip daddr 192.0.2.1 udp dport 1194 accept"))
        #expect(lines.contains("iifname \"lan0\" ip daddr != 10.8.0.1 udp dport 53 dnat ip to 10.8.0.1"))
        #expect(lines.contains("iifname \"tun0\" dnat ip to tcp dport map @tcp_forwards"))
        #expect(lines.contains("elements = { 5000 : 172.22.0.11 . 5000,"))
        #expect(lines.contains("8080 : 172.22.0.10 . 80 }"))
        #expect(lines.contains("oifname \"tun0\" masquerade"))
    }

    @Test func lockdownNeedsNoOpenVPNConfiguration() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        var environment = Self.environment(directory)
        environment["CONFIG"] = "missing.ovpn"
        let outcome = try execute(vpnsupBinary(), ["rules", "--state", "Killswitched"], environment: environment)
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(outcome.stdout.contains("# vpnsup rules for Killswitched (policy lockdown)"))
        #expect(!outcome.stdout.contains("wan0"), "the lockdown names no interface but loopback")
    }

    @Test func badStateOrConfigurationExits78() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let badState = try execute(vpnsupBinary(), ["rules", "--state", "Up"], environment: Self.environment(directory))
        #expect(badState.status == 78)
        #expect(badState.stderr.hasPrefix("--state Up is not a state: one of Init, AddressAssigned"))
        let badDNS = try execute(vpnsupBinary(), ["rules", "--dns", "10.8.0"], environment: Self.environment(directory))
        #expect(badDNS.status == 78)
        #expect(badDNS.stderr == "DNS=10.8.0 is not an IPv4 address\n")
        // Where `run` would refuse CONFIG, with the same line.
        try "client\ndev tap\nremote 192.0.2.1\n".write(to: directory.appendingPathComponent("tap.ovpn"), atomically: true, encoding: .utf8)
        var environment = Self.environment(directory)
        environment["CONFIG"] = "tap.ovpn"
        let tap = try execute(vpnsupBinary(), ["rules"], environment: environment)
        #expect(tap.status == 78)
        #expect(tap.stderr == "CONFIG=\(directory.path)/tap.ovpn:2: dev tap: vpnsup routes at layer 3: OpenVPN's device is tun0, a tun (a tap device would bridge Ethernet frames)\n")
        try "client\nproto udp6\nremote vpn.example.net\n".write(to: directory.appendingPathComponent("v6.ovpn"), atomically: true, encoding: .utf8)
        environment["CONFIG"] = "v6.ovpn"
        let v6 = try execute(vpnsupBinary(), ["rules"], environment: environment)
        #expect(v6.status == 78)
        #expect(v6.stderr == "CONFIG=\(directory.path)/v6.ovpn has no usable remote: vpn.example.net 1194 udp6 (udp6 is IPv6 only, and the WAN carries IPv4 only)\n")
    }

    /// `vpnsup check` runs OpenVPN 2.6 itself on the vetted text, without network: it accepts a
    /// file OpenVPN reads (keys included) and names OpenVPN's own error on one it does not.
    @Test(.enabled(if: isolatedRoot)) func checkAsksOpenVPNItself() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let ca = "/usr/share/doc/openvpn/examples/sample-keys/ca.crt"
        try "client\ndev tun\nremote 192.0.2.1 1194\nca \(ca)\nup /bin/false\n".write(to: directory.appendingPathComponent("good.ovpn"), atomically: true, encoding: .utf8)
        try "client\nremote 192.0.2.1\nca \(ca)\nno-such-option 1\n".write(to: directory.appendingPathComponent("bad.ovpn"), atomically: true, encoding: .utf8)
        var environment = Self.environment(directory)
        environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        environment["CONFIG"] = "good.ovpn"
        let good = try execute(vpnsupBinary(), ["check"], environment: environment)
        #expect(good.status == 0, "\(good.stderr)")
        #expect(good.stdout.contains("line 5: up /bin/false: dropped: runs a program"))
        #expect(good.stdout.contains(": read the vetted configuration, the files it names and its keys and certificates"))
        environment["CONFIG"] = "bad.ovpn"
        let bad = try execute(vpnsupBinary(), ["check"], environment: environment)
        #expect(bad.status == 78)
        #expect(bad.stderr.hasPrefix("CONFIG=\(directory.path)/bad.ovpn: OpenVPN exited with status 1: Options error: Unrecognized option or missing or extra parameter(s) in \(directory.path)/bad.ovpn:4: no-such-option"))
    }

    /// The printed text is what `nft -f` takes, for every state (in a namespace of its own).
    @Test(.enabled(if: isolatedRoot)) func everyStatesRulesetLoadsWithNft() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        for state in ["Init", "AddressAssigned", "TunnelConnecting", "TunnelUp", "Degraded", "Killswitched"] {
            let file = directory.appendingPathComponent("\(state).nft")
            let printed = try execute(vpnsupBinary(), ["rules", "--state", state], environment: Self.environment(directory))
            #expect(printed.status == 0)
            try printed.stdout.write(to: file, atomically: true, encoding: .utf8)
            let loaded = try execute("/usr/bin/unshare", ["--net", "--", "/usr/sbin/nft", "-f", file.path])
            #expect(loaded.status == 0, "\(state): \(loaded.stderr)")
        }
    }
}
