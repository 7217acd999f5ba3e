import Foundation
import Testing
@testable import vpnsup
import TestSupport
import Supervisor

/// `vpnsup run` with METRICS_LISTEN, each in a network namespace of its own: refused values exit
/// 78 after the lockdown, and a running supervisor answers `vpnsup metrics` and GET /metrics with
/// what its status says.
@Suite(.enabled(if: isolatedRoot))
struct MetricsRunTests {
    /// Runs `script` under `unshare --net --mount` with a veth pair, vpnsup as "$VPNSUP", and an
    /// `openvpn` that only sleeps (bound over the real one in the private mount namespace), so the
    /// supervisor waits in TunnelConnecting for as long as the test looks; saves the final table.
    static func run(_ script: String, directory: URL, _ variables: [String: String]) throws -> Outcome {
        let sleeper = directory.appendingPathComponent("openvpn")
        try "#!/bin/sh\nexec sleep 60\n".write(to: sleeper, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: sleeper.path)
        let wrapper = """
            ip link set lo up && ip link add vsteth0 type veth peer name vsteth1 || exit 99
            mount --bind "$DIR/openvpn" "$(command -v openvpn)" || exit 98
            \(script)
            code=$?
            nft list table inet vpnsup > "$DIR/table" 2>&1
            exit $code
            """
        var environment = RunCommandTests.environment(directory, variables)
        environment["DIR"] = directory.path
        environment["VPNSUP"] = vpnsupBinary()
        return try execute("/usr/bin/unshare", ["--net", "--mount", "--", "/bin/sh", "-c", wrapper], environment: environment)
    }

    static func expectLockdown(_ directory: URL) throws {
        let table = try String(contentsOf: directory.appendingPathComponent("table"), encoding: .utf8)
        #expect(table.contains("hook forward priority filter; policy drop;"), "the lockdown is committed: \(table)")
        #expect(!table.contains("vsteth0"))
    }

    @Test(arguments: [
        ("198.51.100.2:9477", "METRICS_LISTEN=198.51.100.2:9477 is neither the LAN gateway address 172.22.0.1 (IP_ADDR) nor a loopback address: metrics are never served on the WAN"),
        ("172.22.0.1:0", "METRICS_LISTEN=172.22.0.1:0 has a port outside 1...65535"),
    ])
    func aRefusedAddressExits78AfterTheLockdown(_ value: String, _ line: String) throws {
        let directory = try RunCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let outcome = try Self.run(#""$VPNSUP" run"#, directory: directory, ["METRICS_LISTEN": value])
        #expect(outcome.status == 78)
        #expect(RunCommandTests.lastLine(outcome.stderr) == line)
        try Self.expectLockdown(directory)
    }

    /// The port is taken (vpnsup inherits a listening socket on it): one line, exit 78, lockdown.
    @Test func aPortInUseExits78WithOneLineAfterTheLockdown() throws {
        let directory = try RunCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let script = """
            /usr/bin/python3 -c 'import os, socket, sys
            s = socket.socket(); s.bind(("127.0.0.1", 9477)); s.listen(); os.set_inheritable(s.fileno(), True)
            os.execv(sys.argv[1], sys.argv[1:])' "$VPNSUP" run
            """
        let outcome = try Self.run(script, directory: directory, ["METRICS_LISTEN": "127.0.0.1:9477"])
        #expect(outcome.status == 78)
        #expect(outcome.stderr == "METRICS_LISTEN=127.0.0.1:9477 cannot be listened on: bind 127.0.0.1:9477: Address already in use\n")
        try Self.expectLockdown(directory)
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("run/metrics.sock").path))
    }

    /// A supervisor waiting for an OpenVPN that never connects: `vpnsup metrics` and a scrape over
    /// loopback show the state and counters its status shows; metrics.sock has status.sock's mode.
    @Test func aRunningSupervisorAnswersWithItsStatus() throws {
        let directory = try RunCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let script = """
            "$VPNSUP" run 2>"$DIR/stderr" & pid=$!
            i=0; until "$VPNSUP" status --json --runtime-dir "$RUNTIME_DIR" 2>/dev/null | grep -q '"policy":"connecting"' || [ $i -ge 100 ]; do
                sleep 0.05; i=$((i+1)); done
            "$VPNSUP" status --json --runtime-dir "$RUNTIME_DIR" > "$DIR/before.json"
            "$VPNSUP" metrics --runtime-dir "$RUNTIME_DIR" > "$DIR/metrics.txt"; echo $? > "$DIR/metrics.rc"
            curl -s -D "$DIR/headers" -o "$DIR/scrape.txt" http://127.0.0.1:9477/metrics
            "$VPNSUP" status --json --runtime-dir "$RUNTIME_DIR" > "$DIR/after.json"
            stat -c %a "$RUNTIME_DIR/metrics.sock" > "$DIR/mode"
            kill -TERM $pid; wait $pid; code=$?
            test -e "$RUNTIME_DIR/metrics.sock" && echo left > "$DIR/left"
            kill -0 $pid 2>/dev/null && echo alive >> "$DIR/left"
            (exit $code)
            """
        let outcome = try Self.run(script, directory: directory, ["METRICS_LISTEN": "127.0.0.1:9477", "PORT_FWD": "172.22.0.10:80"])
        try #require(outcome.status == 0, "SIGTERM ends vpnsup with 0: \(outcome.status) \(outcome.stderr)")
        func read(_ name: String) throws -> String { try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8) }
        #expect(try read("metrics.rc") == "0\n")
        #expect(try read("mode") == "600\n")
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("left").path),
                "vpnsup is gone and took metrics.sock with it")
        #expect(try read("headers").hasPrefix("HTTP/1.1 200 OK\r\n"))
        let before = try JSONDecoder().decode(StatusSnapshot.self, from: Data(try read("before.json").utf8))
        let after = try JSONDecoder().decode(StatusSnapshot.self, from: Data(try read("after.json").utf8))
        for file in ["metrics.txt", "scrape.txt"] {
            let metrics = ParsedExposition(try read(file))
            #expect(before.state == after.state, "the state held still across the scrapes")
            #expect(metrics.value(.state, ["state": before.state]) == 1, "\(file)")
            #expect(metrics.samples.filter { $0.name == MetricFamily.state.rawValue }.map(\.value).reduce(0, +) == 1)
            #expect(metrics.value(.firewallPolicy, ["policy": "connecting"]) == 1)
            #expect(metrics.value(.portForwards) == Double(before.portForwards?.count ?? -1))
            #expect(metrics.value(.portForwards) == 2, "172.22.0.10:80 is a TCP and a UDP forward")
            #expect(metrics.value(.firewallRepairs) == Double(before.firewallRepairs ?? -1))
            // Kernel counters read at the scrape: between the status before and the status after.
            for chain in ["output", "input", "forward", "egress"] {
                let packets = try #require(metrics.value(.droppedPackets, ["chain": chain]), "\(file) \(chain)")
                #expect(Double(before.blocked?[chain]?.packets ?? .max) <= packets && packets <= Double(after.blocked?[chain]?.packets ?? 0))
            }
        }
    }
}
