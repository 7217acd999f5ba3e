import StateMachine
import TestSupport
import Testing
@testable import Actions

/// The ruleset generation and the hand-over of main.swift's lockdown Firewall, each in a fresh
/// network namespace of its own (a NetworkNamespace thread).
@Suite("Firewall: generation and hand-over", .serialized,
       .enabled(if: IsolatedNetworkNamespace.isRootInside, "needs root in the test run's private network namespace"))
struct FirewallHandoverKernelTests {
    @Test func theGenerationMovesWithEveryCommitAndOnlyThen() async throws {
        let (first, unchanged, afterOwn, afterOther) = try await NetworkNamespace.run {
            let firewall = try Firewall()
            let first = try firewall.generation()
            let unchanged = try firewall.generation()
            try firewall.commit(.lockdown)
            let afterOwn = try firewall.generation()
            // Another socket's commit, of another table's worth: the generation is the namespace's.
            try Firewall().deleteTable()
            return (first, unchanged, afterOwn, try firewall.generation())
        }
        #expect(unchanged == first)
        #expect(afterOwn != first)
        #expect(afterOther != afterOwn)
    }

    @Test func theKeptFirewallIsTakenOnceWithItsGeneration() async throws {
        let (kept, takenGeneration, current, second, tableListed) = try await NetworkNamespace.run {
            try HandoverLock.exclusively {
                let kept = FirewallHandover.commitAndKeep(.lockdown)
                let taken = FirewallHandover.take()
                let current = try taken?.firewall.generation()
                let second = FirewallHandover.take()
                let listed = try taken?.firewall.differences(from: .lockdown)
                return (kept, taken?.generation, current, second == nil, listed)
            }
        }
        #expect(kept)
        #expect(takenGeneration != nil)
        #expect(takenGeneration == current, "nothing was committed since the kept commit")
        #expect(second, "the Firewall is handed over once")
        #expect(tableListed == [], "the kernel holds the lockdown the kept Firewall committed")
    }
}
