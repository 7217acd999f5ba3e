import StateMachine
import Testing

// The scenarios with PORT_FWD_FILE: each table is its ordinary counterpart's (the same state
// without forwards), with the rows that differ written out here. `TransitionTableTests` checks
// them like every other table (a partition of the events, every row and every ignored event).

/// `base` with `rows` in place of whatever it said about their events, and `ignoring` moved to
/// the ignored events.
private func derived(from base: ExpectedTable, rows: [ExpectedRow], ignoring: [Event]) -> ExpectedTable {
    let changed = Set(rows.map(\.event) + ignoring)
    return ExpectedTable(rows: base.rows.filter { !changed.contains($0.event) } + rows,
                         ignored: base.ignored.filter { !changed.contains($0) } + ignoring)
}

/// SIGHUP reads PORT_FWD_FILE again, besides the credentials and CONFIG.
private func sighup(_ state: State) -> ExpectedRow {
    ExpectedRow(.reloadRequested, state, [.reloadConfiguration, .readPortForwardFile])
}

func forwardsTable(for scenario: Scenario) -> ExpectedTable? {
    switch scenario {
    case .tunnelConnectingWithForwards:
        // The connecting ruleset holds no forwards: a new set is what the next up commit uses.
        return derived(from: expectedTable(for: .tunnelConnecting), rows: [sighup(.tunnelConnecting)],
                       ignoring: [forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed])
    case .tunnelUpWithForwards:
        return derived(from: expectedTable(for: .tunnelUp), rows: [
            sighup(.tunnelUp),
            // Only the difference, as map element deletes and adds in one transaction.
            ExpectedRow(forwardsChanged, .tunnelUp, [.applyForwardChanges(forwardsDiff)]),
        ], ignoring: [forwardsUnchanged, forwardsRefused, forwardsApplied, forwardsFailed])
    case .forwardChangePending:
        return derived(from: expectedTable(for: .tunnelUp), rows: [
            sighup(.tunnelUp),
            // Another set before the kernel answered: the whole up ruleset, with the newest.
            ExpectedRow(forwardsUnchanged, .tunnelUp, [.applyFirewall(.up)]),
            // The element change failed: the whole up ruleset, with the new forwards.
            ExpectedRow(forwardsFailed, .tunnelUp, [.applyFirewall(.up)]),
        ], ignoring: [forwardsChanged, forwardsRefused, forwardsApplied])
    default:
        return nil
    }
}

@Suite("Port forwards from PORT_FWD_FILE, in the machine")
struct MachineForwardsTests {
    /// The forwards the up ruleset of `machine` holds, as its maps list them.
    private func mapped(_ machine: Machine) -> Set<String> {
        let maps = machine.ruleset(for: .up)?.maps ?? []
        return Set(maps.flatMap { map in map.entries.map { "\($0.publicPort)/\(map.transport) -> \($0.target):\($0.targetPort)" } })
    }

    private func described(_ forwards: [PortForward]) -> Set<String> { Set(forwards.map(\.description)) }

    @Test func acceptedInTunnelUpTheForwardsChangeOnlyOnceTheKernelHasThem() {
        var machine = Scenario.tunnelUpWithForwards.machine()
        #expect(machine.portForwards == forwardsConfiguration.portForwards)
        #expect(machine.handle(forwardsChanged) == [.applyForwardChanges(forwardsDiff)])
        #expect(!forwardsDiff.needsFullCommit && forwardsDiff.label == "-2 +3")
        // Under way: the forwards in force, and those drift repair would commit, are still the old.
        #expect(machine.portForwards == forwardsConfiguration.portForwards)
        #expect(machine.forwardsBeingApplied == changedForwards)
        #expect(mapped(machine) == described(forwardsConfiguration.portForwards))
        #expect(machine.handle(forwardsApplied) == [])
        #expect(machine.portForwards == changedForwards)
        #expect(machine.forwardsBeingApplied == nil)
        #expect(mapped(machine) == described(changedForwards))
        #expect(machine.state == .tunnelUp)
        // The same set again (SIGHUP with the file unchanged): nothing to do.
        #expect(machine.handle(forwardsChanged) == [])
    }

    @Test func aFailedElementChangeCommitsTheWholeUpRulesetWithTheNewForwards() {
        var machine = Scenario.forwardChangePending.machine()
        #expect(machine.handle(forwardsFailed) == [.applyFirewall(.up)])
        #expect(machine.portForwards == changedForwards)
        #expect(mapped(machine) == described(changedForwards))
        #expect(machine.handle(.firewallCommitted(.up)) == [])
        #expect(machine.state == .tunnelUp)
        // A stale report changes nothing.
        #expect(machine.handle(forwardsApplied) == [])
        #expect(machine.portForwards == changedForwards)
    }

    @Test func acceptedWhileConnectingIsWhatTheUpCommitUses() {
        var machine = Scenario.tunnelConnectingWithForwards.machine()
        #expect(machine.handle(forwardsChanged) == [])
        #expect(machine.portForwards == changedForwards)
        // The connecting ruleset holds no forwards, before or after.
        #expect(machine.ruleset(for: .connecting)?.maps == [])
        let actions = feed(&machine, [.tunnelHeld, .credentialsRequested, .tunnelConnected, .tunnelLinkUp])
        #expect(actions.contains(.applyFirewall(.up)))
        #expect(mapped(machine) == described(changedForwards))
    }

    @Test func refusedKeepsTheForwardsInForce() {
        for scenario in [Scenario.tunnelUpWithForwards, .tunnelConnectingWithForwards, .forwardChangePending] {
            var machine = scenario.machine()
            let before = machine
            #expect(machine.handle(forwardsRefused) == [])
            #expect(machine == before, "\(scenario.name)")
        }
    }

    @Test func degradedChangesElementsLikeTunnelUp() {
        var machine = Scenario.tunnelUpWithForwards.machine()
        _ = machine.handle(reconnecting)
        #expect(machine.state == .degraded)
        #expect(machine.handle(forwardsChanged) == [.applyForwardChanges(forwardsDiff)])
    }

    @Test func aNewMapOrAVanishingOneCommitsTheWholeRuleset() {
        var machine = Scenario.tunnelUpWithForwards.machine()
        let tcpOnly = forwardsConfiguration.portForwards.filter { $0.transport == .tcp }
        #expect(PortForwardDiff(from: forwardsConfiguration.portForwards, to: tcpOnly).needsFullCommit)
        #expect(machine.handle(.portForwardsRead(.accepted(tcpOnly))) == [.applyFirewall(.up)])
        #expect(machine.portForwards == tcpOnly)
        #expect(machine.ruleset(for: .up)?.maps.map(\.name) == ["tcp_forwards"])
    }

    @Test func killswitchedTakesTheForwardsForItsNextUpCommit() {
        var machine = Scenario.tunnelUpWithForwards.machine()
        _ = feed(&machine, [.firewallFailed(.up, "EPERM"), .firewallCommitted(.lockdown)])
        #expect(machine.state == .killswitched)
        #expect(machine.handle(forwardsChanged) == [])
        #expect(machine.portForwards == changedForwards)
        #expect(machine.ruleset(for: .lockdown)?.maps == [])
    }

    @Test func repairAndVerificationUseTheForwardsInForce() {
        var machine = Scenario.tunnelUpWithForwards.machine()
        _ = feed(&machine, [forwardsChanged, forwardsApplied])
        #expect(machine.handle(tampered) == [.applyFirewall(.up)])
        #expect(mapped(machine) == described(changedForwards))
        #expect(machine.handle(.firewallNotificationsLost) == [.verifyFirewall(.up)])
    }

    @Test func sighupReadsTheFileOnlyWhenThereIsOne() {
        var withFile = Scenario.tunnelUpWithForwards.machine()
        #expect(withFile.handle(.reloadRequested) == [.reloadConfiguration, .readPortForwardFile])
        var without = Scenario.tunnelUp.machine()
        #expect(without.handle(.reloadRequested) == [.reloadConfiguration])
        var stopping = Scenario.tunnelUpWithForwards.machine()
        _ = stopping.handle(.shutdownRequested)
        #expect(stopping.handle(.reloadRequested) == [])
        #expect(stopping.handle(forwardsChanged) == [])
    }

    @Test func readingsBeforeAConfigurationAreIgnored() {
        var machine = Machine(timings: .exact)
        _ = machine.handle(.start)
        #expect(machine.handle(forwardsChanged) == [])
        #expect(machine.portForwards == [])
    }
}
