import Foundation
import Testing
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
