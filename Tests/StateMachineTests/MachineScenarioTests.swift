import StateMachine
import Testing

@Suite("Machine scenarios")
struct MachineScenarioTests {
    // MARK: Start and configuration

    @Test func firstActionOfANewMachineIsTheLockdown() {
        var machine = Machine(timings: .exact)
        let actions = machine.handle(.start)
        #expect(actions.first == .applyFirewall(.lockdown))
        #expect(actions == [.applyFirewall(.lockdown), .loadConfiguration])
        #expect(machine.state == .initial)
        #expect(machine.requestedPolicy == .lockdown)
    }

    @Test func startTwiceDoesNothingTheSecondTime() {
        var machine = Machine(timings: .exact)
        _ = machine.handle(.start)
        let before = machine
        #expect(machine.handle(.start) == [])
        #expect(machine == before)
    }

    @Test func rejectedConfigurationExitsWith78AndTheMessage() {
        var machine = Machine(timings: .exact)
        _ = machine.handle(.start)
        _ = machine.handle(.firewallCommitted(.lockdown))
        let message = "IP_ADDR=garbage is not an IPv4 address with prefix length"
        #expect(machine.handle(.configurationRejected(message)) == [.exit(code: 78, message: message)])
        #expect(ExitCode.configuration == 78)
    }

    @Test func lockdownFailureBeforeConfigurationExits71AfterConfigurationLoaded() {
        var machine = Machine(timings: .exact)
        _ = machine.handle(.start)
        // The failure is remembered, not acted on: the configuration decides between 78 and 71.
        #expect(machine.handle(.firewallFailed(.lockdown, "netlink: EPERM")) == [])
        #expect(machine.handle(loaded)
                == [.exit(code: 71, message: "cannot commit the lockdown ruleset: netlink: EPERM")])
        #expect(ExitCode.unavailable == 71)
    }

    @Test func lockdownFailureBeforeARejectedConfigurationStillExits78() {
        var machine = Machine(timings: .exact)
        _ = machine.handle(.start)
        _ = machine.handle(.firewallFailed(.lockdown, "EPERM"))
        #expect(machine.handle(.configurationRejected("CONFIG= is required")) == [.exit(code: 78, message: "CONFIG= is required")])
    }

    @Test func lockdownFailureAfterConfigurationExits71Immediately() {
        var machine = Machine(timings: .exact)
        _ = feed(&machine, [.start, loaded])
        #expect(machine.handle(.firewallFailed(.lockdown, "EPERM"))
                == [.exit(code: 71, message: "cannot commit the lockdown ruleset: EPERM")])
    }

    @Test func aSupersededCommitIsIgnored() {
        var machine = machine(in: .addressAssigned) // connecting requested
        #expect(machine.handle(.firewallCommitted(.lockdown)) == [])
        #expect(machine.handle(.firewallFailed(.lockdown, "late")) == [])
        #expect(machine.state == .addressAssigned)
    }

    // MARK: Happy path

    @Test func happyPathInitToTunnelUp() {
        var machine = Machine(timings: .exact)
        let steps: [(Event, State, [Action])] = [
            (.start, .initial, [.applyFirewall(.lockdown), .loadConfiguration]),
            (.firewallCommitted(.lockdown), .initial, []),
            (loaded, .initial, [.ensureLANAddress]),
            (.lanAddressPresent, .addressAssigned, [.applyFirewall(.connecting)]),
            (.firewallCommitted(.connecting), .tunnelConnecting, [.startTunnel]),
            (started, .tunnelConnecting, []),
            (.tunnelControlConnected, .tunnelConnecting, [.watchTunnelState]),
            (.tunnelHeld, .tunnelConnecting, [.releaseTunnel]),
            (waiting, .tunnelConnecting, []),
            (.tunnelDisconnected("OpenVPN reports AUTH"), .tunnelConnecting, []),
            (.credentialsRequested, .tunnelConnecting, [.sendCredentials]),
            (.tunnelDisconnected("OpenVPN reports GET_CONFIG"), .tunnelConnecting, []),
            (.tunnelDisconnected("OpenVPN reports ASSIGN_IP"), .tunnelConnecting, []),
            // The tunnel's route in vpnsup's routing table, whenever tun0 comes up.
            (.tunnelLinkUp, .tunnelConnecting, [.ensureTunnelRoute]),
            (.tunnelDisconnected("OpenVPN reports ADD_ROUTES"), .tunnelConnecting, []),
            (.tunnelConnected, .tunnelUp, [.applyFirewall(.up)]),
            (.firewallCommitted(.up), .tunnelUp, []),
        ]
        var all: [Action] = []
        for (event, state, actions) in steps {
            let got = machine.handle(event)
            all += got
            #expect(got == actions, "after \(label(event))")
            #expect(machine.state == state, "after \(label(event))")
            #expect(machine.requestedPolicy == state.policy, "after \(label(event))")
        }
        // The order that matters, on the whole run.
        let connecting = all.firstIndex(of: .applyFirewall(.connecting))!
        let spawn = all.firstIndex(of: .startTunnel)!
        let release = all.firstIndex(of: .releaseTunnel)!
        #expect(all.first == .applyFirewall(.lockdown))
        #expect(connecting < spawn)
        #expect(spawn < release)
        #expect(machine.reason == nil)
    }

    @Test func tunnelLinkAfterConnectedAlsoReachesTunnelUp() {
        var machine = machine(in: .tunnelConnecting)
        #expect(machine.handle(.tunnelConnected) == [])
        #expect(machine.handle(.tunnelLinkUp) == [.ensureTunnelRoute, .applyFirewall(.up)])
        #expect(machine.state == .tunnelUp)
    }

    @Test func holdIsNotReleasedBeforeTheConnectingPolicyIsCommitted() {
        // After OpenVPN died in TunnelUp, the connecting policy is requested again; the respawned
        // OpenVPN's hold arrives before that commit and must wait for it.
        var machine = machine(in: .tunnelUp)
        #expect(machine.handle(.tunnelProcessExited(.signaled(9)))
                == [.forgetTunnelProcess, .applyFirewall(.connecting), .scheduleTimer(.crashWindow, after: .seconds(60)),
                    .scheduleTimer(.respawn, after: .milliseconds(250))])
        #expect(machine.handle(.timerFired(.respawn)) == [.startTunnel])
        #expect(machine.handle(started) == [])
        #expect(machine.handle(.tunnelControlConnected) == [.watchTunnelState])
        #expect(machine.handle(.tunnelHeld) == [])
        #expect(machine.handle(.firewallCommitted(.up)) == []) // stale, superseded
        #expect(machine.handle(.firewallCommitted(.connecting)) == [.releaseTunnel])
        #expect(machine.handle(.tunnelHeld) == [.releaseTunnel]) // a later hold: released at once
    }

    @Test func pendingHoldIsDroppedWhenTheConnectingPolicyFails() {
        var machine = machine(in: .tunnelUp)
        _ = feed(&machine, [.tunnelProcessExited(.exited(1)), .timerFired(.respawn), started, .tunnelHeld])
        let actions = machine.handle(.firewallFailed(.connecting, "EPERM"))
        #expect(!actions.contains(.releaseTunnel))
        #expect(machine.state == .killswitched)
        #expect(machine.handle(.firewallCommitted(.lockdown)) == [])
    }

    @Test func holdInKillswitchedIsNeverReleased() {
        var machine = machine(in: .tunnelConnecting)
        _ = machine.handle(.firewallFailed(.connecting, "EPERM"))
        #expect(machine.handle(.tunnelHeld) == [])
        #expect(machine.handle(.firewallCommitted(.lockdown)) == [])
    }

    // MARK: Respawn backoff

    @Test func respawnBackoffDoublesIsCappedAndResetsAfterTunnelUp() {
        // Without the crash-loop limit, which would end this after five exits.
        var machine = Machine(timings: Timings(jitter: 0, crashLoopExits: nil))
        _ = feed(&machine, Scenario.tunnelConnecting.path)
        let expected: [Duration] = [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(4),
                                    .seconds(8), .seconds(16), .seconds(30), .seconds(30), .seconds(30)]
        for delay in expected {
            #expect(machine.handle(.tunnelProcessExited(.exited(1))) == [.forgetTunnelProcess, .scheduleTimer(.respawn, after: delay)])
            #expect(machine.state == .tunnelConnecting)
            #expect(machine.handle(.timerFired(.respawn)) == [.startTunnel])
            #expect(machine.handle(started) == [])
        }
        // A spawn failure backs off the same way.
        #expect(machine.handle(.tunnelProcessExited(.exited(1))) == [.forgetTunnelProcess, .scheduleTimer(.respawn, after: .seconds(30))])
        #expect(machine.handle(.timerFired(.respawn)) == [.startTunnel])
        #expect(machine.handle(.tunnelStartFailed("ENOENT")) == [.scheduleTimer(.respawn, after: .seconds(30))])
        #expect(machine.handle(.timerFired(.respawn)) == [.startTunnel])
        _ = feed(&machine, [started, .tunnelConnected, .tunnelLinkUp])
        #expect(machine.state == .tunnelUp)
        // Reset: the next exit waits the base delay again.
        #expect(machine.handle(.tunnelProcessExited(.exited(1)))
                == [.forgetTunnelProcess, .applyFirewall(.connecting), .scheduleTimer(.respawn, after: .milliseconds(250))])
    }

    @Test func respawnUsesTheConfiguredTimings() {
        var machine = Machine(timings: Timings(respawnBase: .seconds(1), respawnCap: .seconds(3), jitter: 0, crashLoopExits: nil))
        _ = feed(&machine, Scenario.tunnelConnecting.path)
        var delays: [Duration] = []
        for _ in 0..<4 {
            for action in machine.handle(.tunnelProcessExited(.exited(1))) {
                if case .scheduleTimer(.respawn, let after) = action { delays.append(after) }
            }
            _ = feed(&machine, [.timerFired(.respawn), started])
        }
        #expect(delays == [.seconds(1), .seconds(2), .seconds(3), .seconds(3)])
    }

    @Test func respawnTimerIsIgnoredWhileOpenVPNRuns() {
        var machine = machine(in: .tunnelConnecting)
        #expect(machine.handle(.timerFired(.respawn)) == [])
    }

    // MARK: Authentication failure

    @Test func authFailureKillswitchesWithoutRespawn() {
        var machine = machine(in: .tunnelConnecting)
        #expect(machine.handle(.authenticationFailed)
                == [.applyFirewall(.lockdown), .cancelTimer(.respawn), .stopTunnel])
        #expect(machine.state == .killswitched)
        #expect(machine.reason == "authentication failed: the server rejected the credentials")
        // Reaped: nobody may use the management socket now; and no respawn.
        #expect(machine.handle(.tunnelProcessExited(.exited(1))) == [.forgetTunnelProcess])
        #expect(machine.handle(.firewallCommitted(.lockdown)) == [])
        for event: Event in [.timerFired(.respawn), .timerFired(.retry), .lanAddressPresent,
                             .firewallCommitted(.connecting), .tunnelHeld, .credentialsRequested] {
            #expect(machine.handle(event) == [], "\(label(event))")
        }
        #expect(machine.state == .killswitched)
        #expect(machine.requestedPolicy == .lockdown)
    }

    @Test func authFailureFromTunnelUp() {
        var machine = machine(in: .tunnelUp)
        #expect(machine.handle(.authenticationFailed)
                == [.applyFirewall(.lockdown), .cancelTimer(.respawn), .stopTunnel])
        #expect(machine.handle(.tunnelProcessExited(.exited(1))) == [.forgetTunnelProcess])
        #expect(machine.handle(.timerFired(.respawn)) == [])
        #expect(machine.state == .killswitched)
    }

    // MARK: Transient failures

    @Test func transientFailureRetriesOnTheTimer() {
        var machine = machine(in: .tunnelUp)
        #expect(machine.handle(.firewallFailed(.up, "EBUSY"))
                == [.applyFirewall(.lockdown), .cancelTimer(.respawn), .stopTunnel,
                    .scheduleTimer(.retry, after: .seconds(5))])
        #expect(machine.reason == "the up ruleset was not committed: EBUSY")
        _ = feed(&machine, [.firewallCommitted(.lockdown), .tunnelProcessExited(.signaled(15))])
        #expect(machine.handle(.timerFired(.retry)) == [.applyFirewall(.connecting)])
        #expect(machine.state == .addressAssigned)
        #expect(machine.handle(.firewallCommitted(.connecting)) == [.startTunnel])
        #expect(machine.state == .tunnelConnecting)
    }

    @Test func retryWithoutTheAddressAsksForItAgain() {
        var machine = machine(in: .initial)
        #expect(machine.handle(.addressFailed("EPERM")) == [.cancelTimer(.respawn), .scheduleTimer(.retry, after: .seconds(5))])
        #expect(machine.handle(.timerFired(.retry)) == [.ensureLANAddress, .scheduleTimer(.retry, after: .seconds(5))])
        #expect(machine.state == .killswitched)
        #expect(machine.handle(.lanAddressPresent) == [.applyFirewall(.connecting)])
        #expect(machine.state == .addressAssigned)
    }

    @Test func retryWhileTheOldOpenVPNIsStillStoppingRespawnsAfterItExits() {
        var machine = machine(in: .tunnelConnecting)
        _ = machine.handle(.addressFailed("EPERM")) // stopTunnel sent, OpenVPN still running
        _ = feed(&machine, [.firewallCommitted(.lockdown)])
        #expect(machine.handle(.timerFired(.retry)) == [.applyFirewall(.connecting)])
        #expect(machine.handle(.firewallCommitted(.connecting)) == []) // no second OpenVPN
        #expect(machine.state == .tunnelConnecting)
        #expect(machine.handle(.tunnelProcessExited(.signaled(15)))
                == [.forgetTunnelProcess, .scheduleTimer(.crashWindow, after: .seconds(60)),
                    .scheduleTimer(.respawn, after: .milliseconds(250))])
        #expect(machine.handle(.timerFired(.respawn)) == [.startTunnel])
    }

    // MARK: Degraded

    @Test func degradedRecoversOnConnectedOrOnTheLink() {
        var machine = machine(in: .tunnelUp)
        // tun0 gone while OpenVPN runs: it reopens the device only when it connects again.
        #expect(machine.handle(.tunnelLinkDown) == [.reconnectTunnel])
        #expect(machine.state == .degraded)
        #expect(machine.reason == "the tunnel interface went down")
        #expect(machine.handle(.tunnelLinkUp) == [.ensureTunnelRoute])
        #expect(machine.state == .tunnelUp)
        #expect(machine.reason == nil)
        #expect(machine.handle(reconnecting) == [])
        #expect(machine.reason == "OpenVPN reports RECONNECTING")
        #expect(machine.handle(.tunnelConnected) == [])
        #expect(machine.state == .tunnelUp)
    }

    // MARK: Shutdown

    @Test(arguments: Scenario.all)
    func shutdownInEveryState(_ scenario: Scenario) {
        var machine = scenario.machine()
        let wasStopping = machine.shuttingDown
        let requestedBefore = machine.requestedPolicy
        let actions = machine.handle(.shutdownRequested)
        #expect(machine.requestedPolicy == .lockdown)
        #expect(machine.state == .killswitched)
        #expect(machine.shuttingDown)
        if wasStopping {
            #expect(actions == [])
            return
        }
        // Also when the kernel may hold the resolving ruleset, which only the lockdown replaces.
        #expect(actions.contains(.applyFirewall(.lockdown)) == (requestedBefore != .lockdown || scenario.resolutionMayBeOpen))
        if actions.contains(.applyFirewall(.lockdown)) {
            #expect(actions.first == .applyFirewall(.lockdown))
        }
        let openvpnRunning = [State.tunnelConnecting, .tunnelUp, .degraded].contains(scenario.state)
        if openvpnRunning {
            #expect(actions.suffix(2) == [.stopTunnel, .scheduleTimer(.stopDeadline, after: .milliseconds(1500))])
            #expect(!actions.contains { if case .exit = $0 { true } else { false } })
            // Nothing else is acted on while stopping (a resolution under way included)...
            let ending: [Event] = [.tunnelProcessExited(.exited(1)), .tunnelStartFailed("ENOENT"), .timerFired(.stopDeadline),
                                   tampered, .firewallNotificationsLost]
                + (scenario.readsOutput ? [outputEnded, optionsError, .timerFired(.tunnelOutput)] : [])
            for event in representativeEvents where !ending.contains(event) {
                var copy = machine
                #expect(copy.handle(event) == [], "while stopping: \(label(event))")
            }
            // ...but the lockdown, if someone removes it, is committed again.
            var copy = machine
            #expect(copy.handle(tampered) == [.applyFirewall(.lockdown)])
            // ...and read back when notifications about it were lost.
            copy = machine
            #expect(copy.handle(.firewallNotificationsLost) == [.verifyFirewall(.lockdown)])
            // ...SIGKILL after the deadline, exit 0 once OpenVPN is gone, and only once.
            if scenario == .exitHeld {
                // It is gone already: nothing to kill; the exit follows its output's end.
                #expect(machine.handle(.timerFired(.stopDeadline)) == [])
                #expect(machine.handle(outputEnded) == [.cancelTimer(.tunnelOutput), .cancelTimer(.stopDeadline), .exit(code: 0, message: nil)])
            } else if scenario.readsOutput {
                #expect(machine.handle(.timerFired(.stopDeadline)) == [.killTunnel])
                #expect(machine.handle(.tunnelProcessExited(.signaled(9))) == [.scheduleTimer(.tunnelOutput, after: .seconds(2))])
                #expect(machine.handle(.timerFired(.stopDeadline)) == [], "an exit waiting for its output is never signalled")
                #expect(machine.handle(outputEnded) == [.cancelTimer(.tunnelOutput), .cancelTimer(.stopDeadline), .exit(code: 0, message: nil)])
            } else {
                #expect(machine.handle(.timerFired(.stopDeadline)) == [.killTunnel])
                #expect(machine.handle(.tunnelProcessExited(.signaled(9))) == [.cancelTimer(.stopDeadline), .exit(code: 0, message: nil)])
            }
            #expect(machine.handle(.tunnelProcessExited(.signaled(9))) == [])
            #expect(machine.handle(.timerFired(.stopDeadline)) == [])
        } else {
            #expect(actions.last == .exit(code: 0, message: nil))
            #expect(!actions.contains(.stopTunnel))
        }
        #expect(actions.contains(.cancelTimer(.respawn)))
        #expect(actions.contains(.cancelTimer(.retry)))
        #expect(machine.handle(.shutdownRequested) == [])
    }

    @Test func shutdownExitsAsSoonAsOpenVPNExitsBeforeTheDeadline() {
        var machine = machine(in: .tunnelUp)
        _ = machine.handle(.shutdownRequested)
        #expect(machine.handle(.tunnelProcessExited(.exited(0))) == [.cancelTimer(.stopDeadline), .exit(code: 0, message: nil)])
        #expect(machine.handle(.timerFired(.stopDeadline)) == [])
    }

    @Test func shutdownWhileOpenVPNIsBeingSpawned() {
        var machine = machine(in: .addressAssigned)
        #expect(machine.handle(.firewallCommitted(.connecting)) == [.startTunnel])
        #expect(machine.handle(.shutdownRequested)
                == [.applyFirewall(.lockdown), .cancelTimer(.respawn), .cancelTimer(.retry), .stopTunnel,
                    .scheduleTimer(.stopDeadline, after: .milliseconds(1500))])
        // The spawn completes after the SIGTERM was due: stop it again.
        #expect(machine.handle(started) == [.stopTunnel])
        #expect(machine.handle(.tunnelProcessExited(.signaled(15))) == [.cancelTimer(.stopDeadline), .exit(code: 0, message: nil)])
    }

    @Test func shutdownWhileSpawnFails() {
        var machine = machine(in: .addressAssigned)
        _ = feed(&machine, [.firewallCommitted(.connecting), .shutdownRequested])
        #expect(machine.handle(.tunnelStartFailed("ENOENT")) == [.cancelTimer(.stopDeadline), .exit(code: 0, message: nil)])
    }

    @Test func shutdownDuringRespawnBackoffExitsAtOnce() {
        var machine = machine(in: .tunnelConnecting)
        _ = machine.handle(.tunnelProcessExited(.exited(1)))
        #expect(machine.handle(.shutdownRequested)
                == [.applyFirewall(.lockdown), .cancelTimer(.respawn), .cancelTimer(.retry), .exit(code: 0, message: nil)])
        #expect(machine.handle(.timerFired(.respawn)) == [])
    }

    // MARK: Drift repair (outside changes to table inet vpnsup)

    @Test func tamperingBeforeStartIsIgnored() {
        var machine = Machine(timings: .exact)
        #expect(machine.handle(tampered) == [])
        #expect(machine.requestedPolicy == nil)
        #expect(machine.handle(.start) == [.applyFirewall(.lockdown), .loadConfiguration])
    }

    @Test(arguments: Scenario.all)
    func tamperingRecommitsTheStatesPolicyWithoutLeavingTheState(_ scenario: Scenario) {
        var machine = scenario.machine()
        #expect(machine.handle(tampered) == [.applyFirewall(scenario.state.policy)])
        #expect(machine.state == scenario.state)
        #expect(machine.requestedPolicy == scenario.state.policy)
        // Again before the repair lands: asked for again (the driver commits in order, idempotently).
        #expect(machine.handle(tampered) == [.applyFirewall(scenario.state.policy)])
        // (AddressAssigned moves on with its first commit of the connecting policy, as usual, and
        // Init with name resolution with its commit of the lockdown.)
        guard !scenario.advancesOnCommit else { return }
        #expect(machine.handle(.firewallCommitted(scenario.state.policy)) == [])
        #expect(machine.state == scenario.state)
    }

    /// Between the outside change and the repair the kernel holds something vpnsup did not
    /// commit: OpenVPN's hold is released only once the repair has been committed.
    @Test func holdWaitsForTheRepair() {
        var machine = Scenario.tunnelConnecting.machine()
        #expect(machine.handle(tampered) == [.applyFirewall(.connecting)])
        #expect(machine.handle(.tunnelHeld) == [])
        #expect(machine.handle(.firewallCommitted(.connecting)) == [.releaseTunnel])
    }

    @Test func aFailedRepairKillsTheSwitch() {
        var machine = machine(in: .tunnelUp)
        _ = machine.handle(tampered)
        let actions = machine.handle(.firewallFailed(.up, "EPERM"))
        #expect(machine.state == .killswitched)
        #expect(actions.first == .applyFirewall(.lockdown))
    }

    @Test func tamperingDuringShutdownRecommitsTheLockdownAndStillExits() {
        var machine = machine(in: .tunnelUp)
        _ = machine.handle(.shutdownRequested)
        #expect(machine.handle(tampered) == [.applyFirewall(.lockdown)])
        #expect(machine.handle(.firewallCommitted(.lockdown)) == [])
        #expect(machine.handle(.tunnelProcessExited(.signaled(15))) == [.cancelTimer(.stopDeadline), .exit(code: 0, message: nil)])
    }

    // MARK: Status words

    @Test func stateNamesAreTheInterface() {
        #expect(State.allCases.map(\.description)
                == ["Init", "AddressAssigned", "TunnelConnecting", "TunnelUp", "Degraded", "Killswitched"])
        #expect(State.allCases.map(\.policy) == [.lockdown, .connecting, .connecting, .up, .up, .lockdown])
    }

    @Test func openVPNStateNamesRoundTrip() {
        for name in ["CONNECTING", "WAIT", "AUTH", "GET_CONFIG", "ASSIGN_IP", "ADD_ROUTES", "CONNECTED",
                     "RECONNECTING", "EXITING", "RESOLVE", "TCP_CONNECT", "AUTH_PENDING", "SOMETHING_NEW"] {
            #expect(OpenVPNState(name: name).name == name)
        }
        #expect(OpenVPNState(name: "CONNECTED") == .connected)
        #expect(OpenVPNState(name: "connected") == .other("connected"))
    }
}
