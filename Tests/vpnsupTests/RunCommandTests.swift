import Foundation
import Testing
@testable import vpnsup

/// Root tests in the private network namespace `make test` runs them in (`unshare --net`): never
/// in the machine's own namespace, where a lockdown would cut the machine off.
let isolatedRoot: Bool = {
    guard getuid() == 0 else { return false }
    let mine = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
    let initial = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/1/ns/net")
    return mine != nil && initial != nil && mine != initial
}()

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
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Outcome(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                   stderr: String(decoding: stderr, as: UTF8.self))
}

func vpnsupBinary() -> String {
    ProcessInfo.processInfo.environment["VPNSUP"] ?? repositoryRoot.appendingPathComponent(".build/debug/vpnsup").path
}

@Suite(.serialized)
struct RunCommandTests {
    /// Interfaces that exist in the private namespace, so only the variable under test is wrong.
    static let prepared: Bool = {
        guard isolatedRoot else { return false }
        _ = try? execute("/usr/sbin/ip", ["link", "add", "vsteth0", "type", "veth", "peer", "name", "vsteth1"])
        return true
    }()

    static func scratch() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vpnsup-run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try "client\nremote 192.0.2.1 1194\n".write(to: directory.appendingPathComponent("client.ovpn"), atomically: true, encoding: .utf8)
        try "user\npass\n".write(to: directory.appendingPathComponent("credentials"), atomically: true, encoding: .utf8)
        return directory
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

    @Test(.enabled(if: prepared), arguments: badInputs.indices)
    func badConfigurationExits78AfterTheLockdown(index: Int) throws {
        let (variables, expected) = Self.badInputs[index]
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try execute("/usr/sbin/nft", ["delete", "table", "inet", "vpnsup"])

        let outcome = try execute(vpnsupBinary(), ["run"], environment: Self.environment(directory, variables))

        #expect(outcome.status == 78)
        #expect(outcome.stderr == expected.replacingOccurrences(of: "<dir>", with: directory.path) + "\n")
        let table = try execute("/usr/sbin/nft", ["list", "table", "inet", "vpnsup"])
        #expect(table.status == 0, "the lockdown table must be committed before the configuration is judged")
        #expect(table.stdout.contains("hook forward priority filter; policy drop;"))
        #expect(table.stdout.contains("oifname \"lo\" accept"))
        #expect(!table.stdout.contains("vsteth0"), "the lockdown names no interface but loopback")
    }

    @Test(.enabled(if: prepared))
    func flagsWinOverTheEnvironment() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let outcome = try execute(vpnsupBinary(), ["run", "--ip-addr", "not-an-address"],
                                  environment: Self.environment(directory, [:]))
        #expect(outcome.status == 78)
        #expect(outcome.stderr == "IP_ADDR=not-an-address is not an IPv4 address with prefix length\n")
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

    @Test func jsonCarriesStateAndSince() throws {
        let board = StatusBoard(startedAt: Date(timeIntervalSince1970: 0))
        board.transition(from: .initial, to: .addressAssigned, cause: "lanAddressPresent", reason: nil)
        let object = try JSONSerialization.jsonObject(with: Data(board.json())) as? [String: Any]
        #expect(object?["state"] as? String == "AddressAssigned")
        let since = try #require(object?["since"] as? String)
        #expect(since.hasSuffix("Z") && since.contains("T"))
        #expect((object?["transitions"] as? [[String: Any]])?.first?["event"] as? String == "lanAddressPresent")
    }
}
