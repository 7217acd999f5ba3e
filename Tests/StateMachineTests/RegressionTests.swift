import StateMachine
import Testing

// Bugs found in the machine while writing the table tests; each test pins the fixed behaviour.

@Suite("Machine regressions")
struct RegressionTests {
    /// Events before `.start` were acted on: `configurationLoaded` before `.start` emitted
    /// `ensureLANAddress` — the LAN is touched before the lockdown was even requested — and a
    /// longer pre-start sequence leaves the machine in AddressAssigned while `.start` then
    /// requests the lockdown (requestedPolicy != state.policy).
    @Test func eventsBeforeStartAreIgnored() {
        var machine = Machine(timings: .exact)
        #expect(machine.handle(loaded) == [])
        #expect(machine.handle(.configurationRejected("late")) == [])
        #expect(machine.handle(.start).first == .applyFirewall(.lockdown))

        var other = Machine(timings: .exact)
        _ = feed(&other, [loaded, .addressFailed("x"), .firewallCommitted(.lockdown), .lanAddressPresent])
        _ = other.handle(.start)
        #expect(other.state == .initial)
        #expect(other.requestedPolicy == other.state.policy)
    }

    /// In Init, the address reported before the lockdown commit was never acted on: the
    /// machine stayed in Init forever with the address present and the lockdown committed.
    /// (`ensureLANAddress` is emitted on `configurationLoaded`, so nothing orders netlink's
    /// confirmation after the commit's result.)
    @Test func addressSeenBeforeTheLockdownCommitStillAdvances() {
        var machine = Machine(timings: .exact)
        _ = feed(&machine, [.start, loaded])
        #expect(machine.handle(.lanAddressPresent) == []) // the lockdown is not committed yet: wait
        #expect(machine.handle(.firewallCommitted(.lockdown)) == [.applyFirewall(.connecting)])
        #expect(machine.state == .addressAssigned)
    }

    /// A lockdown failure while Killswitched after an authentication failure turned it
    /// into a transient failure: the retry timer then left Killswitched and respawned OpenVPN
    /// with the credentials the server rejected (risking an account lock-out), although an
    /// authentication failure is meant to wait for new credentials.
    @Test func authFailureStaysSticky() {
        var machine = Scenario.killswitched.machine()
        _ = machine.handle(.firewallFailed(.lockdown, "EBUSY"))
        var actions = machine.handle(.timerFired(.retry))
        actions += machine.handle(.firewallCommitted(.connecting))
        #expect(machine.state == .killswitched)
        #expect(!actions.contains(.startTunnel))
        #expect(!actions.contains(.applyFirewall(.connecting)))
    }
}
