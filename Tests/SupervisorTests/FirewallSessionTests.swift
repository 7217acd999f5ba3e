import Actions
import StateMachine
@testable import Supervisor
import TestSupport
import Testing

/// FirewallSession with main.swift's hand-over, each test in a fresh network namespace of its own:
/// the lockdown committed at start is not sent again only when nothing was committed since, and
/// only for the first commit.
@Suite("Firewall session", .serialized,
       .enabled(if: IsolatedNetworkNamespace.isRootInside, "needs root in the test run's private network namespace"))
struct FirewallSessionTests {
    /// What `commit` returned for each ruleset, in order (a generation: not sent).
    static func commits(_ rulesets: [Ruleset], outsideCommitFirst: Bool = false) async throws -> [UInt32?] {
        try await NetworkNamespace.run {
            try HandoverLock.exclusively {
                #expect(FirewallHandover.commitAndKeep(.lockdown))
                if outsideCommitFirst { try Firewall().commit(.lockdown) }
                let session = FirewallSession(log: SupervisorLog(RecordingLog().logger()), receiver: .calling { _ in })
                defer { session.stop() }
                return try rulesets.map { try session.commit($0) }
            }
        }
    }

    static let other = Ruleset(chains: [Chain(name: "output", kind: .filter, hook: .output, priority: 0, policy: .accept, rules: [])])

    @Test func theUnchangedLockdownIsNotSentAgainOnce() async throws {
        let results = try await Self.commits([.lockdown, .lockdown])
        #expect(results[0] != nil, "the first commit of the same lockdown is skipped")
        #expect(results[1] == nil, "every later commit is sent")
    }

    @Test func aCommitInBetweenMakesItSentAgain() async throws {
        #expect(try await Self.commits([.lockdown], outsideCommitFirst: true) == [nil])
    }

    @Test func onlyTheFirstCommitMayBeSkipped() async throws {
        #expect(try await Self.commits([Self.other, .lockdown]) == [nil, nil])
    }
}
