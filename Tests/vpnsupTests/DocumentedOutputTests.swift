import ArgumentParser
import Foundation
import Testing
import Supervisor
@testable import vpnsup

/// What the documentation shows of vpnsup's output is vpnsup's output: the `vpnsup status` sample
/// in docs/operations.md is rendered here by `StatusReport` from a status as `status --json`
/// gives it. `statusSampleIsTheRealOutput` fails when the document is stale; run the tests with
/// UPDATE_DOCS=1 to rewrite the sample in place (as ArchitectureDocTests does for its sections).
@Suite struct DocumentedOutputTests {
    static let operations = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/operations.md")
    static let begin = "<!-- BEGIN GENERATED: status sample (Tests/vpnsupTests/DocumentedOutputTests.swift) -->"
    static let end = "<!-- END GENERATED: status sample -->"

    /// A router in TunnelUp, as `vpnsup status --json` prints it.
    static let statusJSON = """
        {"state":"TunnelUp","since":"2026-11-28T08:30:04.877Z","policy":"up","pid":8570,
         "startedAt":"2026-11-28T08:30:04.858Z","lanInterface":"eth1","gateway":"172.22.0.1/24",
         "endpoints":["198.51.100.1:1194/udp"],"openvpnPID":8593,"openvpnState":"CONNECTED",
         "tunnelAddress":"10.8.0.2","remote":"198.51.100.1:1194","firewallRepairs":0,
         "bytesIn":48213,"bytesOut":20411,"portForwards":["8080/tcp -> 172.22.0.10:80"],
         "probe":{"server":"203.0.113.10","name":"example.com","intervalSeconds":10,
                  "lastAt":"2026-11-28T08:31:04.901Z","lastResult":"answered","consecutiveFailures":0},
         "blocked":{"forward":{"packets":12,"bytes":1008},"input":{"packets":3,"bytes":180}},
         "transitions":[
           {"at":"2026-11-28T08:30:04.864Z","from":"Init","to":"AddressAssigned","event":"lanAddressPresent"},
           {"at":"2026-11-28T08:30:04.866Z","from":"AddressAssigned","to":"TunnelConnecting","event":"firewallCommitted(connecting)"},
           {"at":"2026-11-28T08:30:04.877Z","from":"TunnelConnecting","to":"TunnelUp","event":"tunnelLinkUp"}]}
        """

    static func sample() throws -> String {
        let snapshot = try JSONDecoder().decode(StatusSnapshot.self, from: Data(statusJSON.utf8))
        return "```\n" + StatusReport.human(snapshot) + "```"
    }

    @Test func statusSampleIsTheRealOutput() throws {
        var document = try String(contentsOf: Self.operations, encoding: .utf8)
        guard let start = document.range(of: Self.begin), let stop = document.range(of: Self.end, range: start.upperBound..<document.endIndex) else {
            Issue.record("docs/operations.md lacks the markers \(Self.begin) ... \(Self.end)")
            return
        }
        let generated = "\n" + (try Self.sample()) + "\n"
        guard String(document[start.upperBound..<stop.lowerBound]) != generated else { return }
        if ProcessInfo.processInfo.environment["UPDATE_DOCS"] == "1" {
            document.replaceSubrange(start.upperBound..<stop.lowerBound, with: generated)
            try document.write(to: Self.operations, atomically: true, encoding: .utf8)
        } else {
            Issue.record("""
                The status sample in docs/operations.md is not what `vpnsup status` prints.
                Regenerate it with:  UPDATE_DOCS=1 swift test --filter statusSampleIsTheRealOutput
                """)
        }
    }

    /// Help texts are paragraphs ArgumentParser wraps itself: rendered very wide, no sentence
    /// continues on a next line (which starts with a lower-case letter after a non-empty line).
    @Test(arguments: [("run", Run.helpMessage(columns: 5000)), ("rules", Rules.helpMessage(columns: 5000)),
                      ("check", Check.helpMessage(columns: 5000)), ("metrics", MetricsCommand.helpMessage(columns: 5000)),
                      ("status", Status.helpMessage(columns: 5000)), ("health", Health.helpMessage(columns: 5000))])
    func helpTextsHaveNoHardLineBreaks(command: String, help: String) {
        let lines = help.split(separator: "\n", omittingEmptySubsequences: false)
        for (previous, line) in zip(lines, lines.dropFirst()) where !previous.isEmpty {
            if let first = line.first, first.isLowercase {
                Issue.record("`vpnsup \(command) --help` breaks a sentence: '\(previous)' / '\(line)'")
            }
        }
        #expect(help.contains("OVERVIEW:"))
    }
}
