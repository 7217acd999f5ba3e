import Foundation
import Testing
@testable import Supervisor
@testable import vpnsup

/// `remote` lines with host names, end to end through `vpnsup run`, each in a network and mount
/// namespace of its own: /etc/resolv.conf is bind-mounted there, so the test picks the resolver.
@Suite(.enabled(if: isolatedRoot))
struct HostnameRemoteTests {
    static let dnsmasq = ["/usr/sbin/dnsmasq", "/sbin/dnsmasq"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Runs `script` under `unshare --net --mount` with a veth pair, `nameserver` as the only
    /// line of /etc/resolv.conf, and vpnsup as "$VPNSUP"; saves the final table.
    static func runInNamespace(_ script: String, nameserver: String, directory: URL,
                               environment: [String: String]) throws -> Outcome {
        let resolvConf = directory.appendingPathComponent("resolv.conf")
        try "nameserver \(nameserver)\n".write(to: resolvConf, atomically: true, encoding: .utf8)
        let wrapper = """
            ip link set lo up && ip link add vsteth0 type veth peer name vsteth1 || exit 99
            mount --bind "$RESOLV_CONF" /etc/resolv.conf || exit 98
            \(script)
            code=$?
            nft list table inet vpnsup > "$DIR/table" 2>&1
            exit $code
            """
        var environment = environment
        environment["RESOLV_CONF"] = resolvConf.path
        environment["DIR"] = directory.path
        environment["VPNSUP"] = vpnsupBinary()
        return try execute("/usr/bin/unshare", ["--net", "--mount", "--", "/bin/sh", "-c", wrapper], environment: environment)
    }

    @Test func unresolvableNamesOnlyExit78NamingThemWithTheLockdownCommitted() throws {
        let directory = try RunCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        try "client\nremote vpn.invalid 1194\nremote 2001:db8::1 1194\n"
            .write(to: directory.appendingPathComponent("client.ovpn"), atomically: true, encoding: .utf8)
        let started = Date()
        // Nothing routes to the nameserver in this namespace: every query fails at once.
        let outcome = try Self.runInNamespace(#""$VPNSUP" run"#, nameserver: "192.0.2.53", directory: directory,
                                              environment: RunCommandTests.environment(directory, [:]))
        #expect(outcome.status == 78)
        let lines = outcome.stderr.split(separator: "\n").map(String.init)
        #expect(lines.count == 1, "a bad configuration gets stderr to itself: \(outcome.stderr)")
        #expect(lines.last == "CONFIG=\(directory.path)/client.ovpn has no remote that resolves to an IPv4 address: "
            + "vpn.invalid (192.0.2.53: connect: Network is unreachable)")
        #expect(Date().timeIntervalSince(started) < 5)
        let table = try String(contentsOf: directory.appendingPathComponent("table"), encoding: .utf8)
        #expect(table.contains("hook output priority filter; policy drop;"), "the kill switch stays committed")
        #expect(!table.contains("dport 53"), "resolution is closed again: \(table)")
        #expect(!table.contains("vsteth0"))
    }

    @Test(.enabled(if: dnsmasq != nil, "needs dnsmasq"))
    func aResolvedNameIsPinnedInTheConnectingRuleset() throws {
        let directory = try RunCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        try "client\nremote vpn.test 1194\nremote nope.test 443 tcp\n"
            .write(to: directory.appendingPathComponent("client.ovpn"), atomically: true, encoding: .utf8)
        // A resolver on loopback (as Docker's 127.0.0.11), which the lockdown leaves open; vpnsup
        // runs until its connecting ruleset pins the address, then gets SIGTERM.
        let script = """
            \(Self.dnsmasq!) --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
                --listen-address=127.0.0.1 --user=root --group=root --pid-file= --log-facility=/dev/null \
                --local=/test/ --host-record=vpn.test,192.0.2.7 & dns=$!
            i=0; until dig +short +time=1 +tries=1 @127.0.0.1 vpn.test >/dev/null 2>&1 || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done
            "$VPNSUP" run 2>"$DIR/stderr" & pid=$!
            i=0; until nft list table inet vpnsup 2>/dev/null | grep -q 'ip daddr 192.0.2.7 udp dport 1194 accept' || [ $i -ge 100 ]; do
                sleep 0.05; i=$((i+1)); done
            "$VPNSUP" status --json --runtime-dir "$RUNTIME_DIR" > "$DIR/status.json"
            nft list table inet vpnsup > "$DIR/connecting" 2>&1
            kill -TERM $pid; wait $pid; code=$?
            kill -KILL $dns
            (exit $code)
            """
        var environment = RunCommandTests.environment(directory, [:])
        environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        let outcome = try Self.runInNamespace(script, nameserver: "127.0.0.1", directory: directory, environment: environment)
        try #require(outcome.status == 0, "SIGTERM ends vpnsup with 0: \(outcome.status) \(outcome.stderr)")
        let connecting = try String(contentsOf: directory.appendingPathComponent("connecting"), encoding: .utf8)
        #expect(connecting.contains("oifname \"vsteth0\" meta mark 0x76706e01 ip daddr 192.0.2.7 udp dport 1194 accept"), "\(connecting)")
        #expect(!connecting.contains("dport 53"))
        let stderr = try String(contentsOf: directory.appendingPathComponent("stderr"), encoding: .utf8)
        #expect(stderr.contains("resolved 1 of 2 remote host names in "))
        #expect(stderr.contains("vpn.test -> 192.0.2.7"))
        #expect(stderr.contains("remotes whose host name did not resolve are skipped: nope.test (127.0.0.1: no such name (NXDOMAIN))"))
        let status = try JSONDecoder().decode(StatusSnapshot.self, from: Data(contentsOf: directory.appendingPathComponent("status.json")))
        #expect(status.resolvedRemotes == ["vpn.test": ["192.0.2.7"]])
        #expect(status.endpoints == ["192.0.2.7:1194/udp"])
        let table = try String(contentsOf: directory.appendingPathComponent("table"), encoding: .utf8)
        #expect(!table.contains("192.0.2.7"), "after SIGTERM the lockdown stays")
    }

    /// Resolution runs off the driver's actor: a SIGTERM while the nameserver stays silent ends
    /// vpnsup at once (exit 0), not after the resolver's 4 s, and the lockdown stays.
    @Test func sigtermDuringResolutionExitsPromptly() throws {
        let directory = try RunCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        try "client\nremote vpn.test 1194\n".write(to: directory.appendingPathComponent("client.ovpn"), atomically: true, encoding: .utf8)
        let script = """
            python3 -c 'import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 53)); time.sleep(30)' & silent=$!
            sleep 0.3
            "$VPNSUP" run 2>"$DIR/stderr" & pid=$!
            sleep 0.5
            t0=$(date +%s%N); kill -TERM $pid; wait $pid; code=$?; t1=$(date +%s%N)
            echo $(( (t1 - t0) / 1000000 )) > "$DIR/exit-ms"
            kill -KILL $silent
            (exit $code)
            """
        var environment = RunCommandTests.environment(directory, [:])
        environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        let outcome = try Self.runInNamespace(script, nameserver: "127.0.0.1", directory: directory, environment: environment)
        let stderr = (try? String(contentsOf: directory.appendingPathComponent("stderr"), encoding: .utf8)) ?? ""
        #expect(outcome.status == 0, "\(outcome.stderr) \(stderr)")
        let milliseconds = try Int(String(contentsOf: directory.appendingPathComponent("exit-ms"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines))
        #expect((milliseconds ?? 9999) < 1000, "SIGTERM -> exit took \(milliseconds ?? -1) ms")
        #expect(!stderr.contains("resolved "), "resolution had not finished: \(stderr)")
        let table = try String(contentsOf: directory.appendingPathComponent("table"), encoding: .utf8)
        #expect(table.contains("hook output priority filter; policy drop;") && !table.contains("dport 53"))
    }
}
