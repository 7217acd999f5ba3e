import Foundation
import Testing
@testable import Supervisor
@testable import vpnsup

/// `vpnsup run` with a configuration only OpenVPN itself refuses, in a network namespace of its
/// own with real OpenVPN 2.6 (no server needed: it stops on its options before any network). The
/// lab e2e (Tests/lab/provider-config.sh) does the same with a live tunnel around it.
@Suite(.enabled(if: isolatedRoot))
struct ProviderRunTests {
    @Test func anOptionOnlyOpenVPNRefusesEndsRunWith78AfterTheLockdown() throws {
        let directory = try RunCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        // A script line too: it never reaches OpenVPN (which would otherwise refuse it first: no
        // script-security), and the refusal names the user's file and line, not the vetted copy's.
        try "client\nremote 192.0.2.1 1194\nup /bin/false\nfoo-bar 1\n"
            .write(to: directory.appendingPathComponent("client.ovpn"), atomically: true, encoding: .utf8)
        let tableFile = directory.appendingPathComponent("table")
        let runtime = directory.appendingPathComponent("run").path
        let started = Date()

        let outcome = try runIsolated(["run"], environment: RunCommandTests.environment(directory, [:]), tableTo: tableFile)

        let elapsed = Date().timeIntervalSince(started)
        let config = directory.appendingPathComponent("client.ovpn").path
        #expect(outcome.status == 78, "\(outcome.stderr)")
        let last = RunCommandTests.lastLine(outcome.stderr) ?? ""
        #expect(last.hasPrefix("CONFIG=\(config): OpenVPN exited with status 1: Options error: Unrecognized option or missing or extra parameter(s) in \(config):4: foo-bar ("),
                "\(outcome.stderr)")
        #expect(outcome.stderr.components(separatedBy: "started OpenVPN (pid").count == 2, "OpenVPN was started once")
        #expect(outcome.stderr.contains("CONFIG=\(config):3: up /bin/false: dropped: runs a program"))
        #expect(!outcome.stderr.contains("openvpn.conf:"), "OpenVPN's messages name the user's file")
        let table = try String(contentsOf: tableFile, encoding: .utf8)
        #expect(table.contains("hook forward priority filter; policy drop;"), "the lockdown is committed after the exit: \(table)")
        #expect(!table.contains("192.0.2.1"), "the connecting ruleset is gone")
        #expect(!FileManager.default.fileExists(atPath: runtime + "/openvpn.conf"), "the vetted text is removed at exit")
        print("figure: vpnsup run on an option OpenVPN refuses -> exit 78 in \(String(format: "%.2f", elapsed)) s")
    }
}

/// `vpnsup status` in words: what the vetting did to CONFIG, the remotes not used, the last
/// resolution of the host names.
struct ProviderStatusReportTests {
    @Test func findingsSkippedRemotesAndTheLastResolution() {
        var snapshot = StatusSnapshot(since: "2026-12-06T11:00:00.000Z", pid: 42, startedAt: "2026-12-06T10:59:59.000Z")
        #expect(!StatusReport.human(snapshot).contains("resolved"))
        #expect(!StatusReport.human(snapshot).contains("CONFIG lines"))
        snapshot.findings = [
            .init(file: "/config/vpn.ovpn", line: 6, directive: "up /etc/openvpn/update-resolv-conf", action: "dropped",
                  replacement: nil, level: "warning", reason: "runs a program"),
            .init(file: "/config/vpn.ovpn", line: 9, directive: "tls-remote server", action: "translated",
                  replacement: "verify-x509-name server name-prefix", level: "warning", reason: "removed in OpenVPN 2.4"),
        ]
        snapshot.skippedRemotes = ["remote 2001:db8::1 1194 udp (line 4): skipped: an IPv6 address, and the WAN carries IPv4 only"]
        snapshot.resolutions = 2
        snapshot.lastResolution = .init(at: "2026-12-06T11:05:00.000Z", cause: "every pinned address failed to connect",
                                        names: ["vpn.example.com", "gone.example.com"],
                                        addresses: ["vpn.example.com": ["198.51.100.3", "198.51.100.4"]],
                                        failures: ["gone.example.com": "NXDOMAIN"], milliseconds: 1.25,
                                        endpoints: ["198.51.100.3:1194/udp", "198.51.100.4:1194/udp"])
        let text = StatusReport.human(snapshot)
        #expect(text.contains("resolved    vpn.example.com -> 198.51.100.3 198.51.100.4, gone.example.com (NXDOMAIN) "
            + "at 2026-12-06T11:05:00.000Z in 1.25 ms (every pinned address failed to connect; 2 in all)"), "\(text)")
        #expect(text.contains("CONFIG lines not passed to OpenVPN as written:\n"
            + "  warning /config/vpn.ovpn:6: up /etc/openvpn/update-resolv-conf: dropped: runs a program\n"
            + "  warning /config/vpn.ovpn:9: tls-remote server: translated to verify-x509-name server name-prefix: removed in OpenVPN 2.4\n"), "\(text)")
        #expect(text.contains("remotes not used:\n  remote 2001:db8::1 1194 udp (line 4): skipped: an IPv6 address, and the WAN carries IPv4 only\n"))
    }
}
