import StateMachine
import Testing

// The recovery policy added on top of the basic machine: the DNS probe, the WAN link, crash
// loops, jittered backoff and SIGHUP reloads.

private let probing = Timings(jitter: 0, probeInterval: .seconds(10), probeFailures: 3)
private let noAnswer = Event.probeFailed("no answer from 10.8.0.1 within 2 s")

private func upMachine(_ timings: Timings) -> Machine {
    var machine = Machine(timings: timings)
    _ = feed(&machine, Scenario.tunnelUp.path)
    return machine
}

@Suite struct ProbeTests {
    @Test func tunnelUpStartsTheProbeTimerOnce() {
        var machine = Machine(timings: probing)
        _ = feed(&machine, Scenario.tunnelConnecting.path + [.tunnelHeld, .credentialsRequested, .tunnelConnected])
        #expect(machine.handle(.tunnelLinkUp) == [.ensureTunnelRoute, .applyFirewall(.up), .scheduleTimer(.probe, after: .seconds(10))])
        #expect(machine.handle(.timerFired(.probe)) == [.probeTunnel, .scheduleTimer(.probe, after: .seconds(10))])
        // Degraded and back while the timer runs: no second timer.
        _ = machine.handle(reconnecting)
        #expect(machine.handle(.tunnelConnected) == [])
        #expect(machine.state == .tunnelUp)
    }

    @Test func failuresInARowDegradeAndReconnect() {
        var machine = upMachine(probing)
        #expect(machine.handle(noAnswer) == [])
        #expect(machine.handle(noAnswer) == [])
        #expect(machine.handle(noAnswer) == [.reconnectTunnel])
        #expect(machine.state == .degraded)
        #expect(machine.reason == "the DNS probe failed 3 times in a row: no answer from 10.8.0.1 within 2 s")
        // Still failing: another reconnect every three failures, not every failure.
        #expect(machine.handle(noAnswer) == [])
        #expect(machine.handle(noAnswer) == [])
        #expect(machine.handle(noAnswer) == [.reconnectTunnel])
        #expect(machine.state == .degraded)
    }

    @Test func aSuccessInBetweenResetsTheCount() {
        var machine = upMachine(probing)
        _ = feed(&machine, [noAnswer, noAnswer, .probeSucceeded, noAnswer, noAnswer])
        #expect(machine.state == .tunnelUp)
    }

    @Test func degradedByProbesReturnsOnASuccess() {
        var machine = upMachine(probing)
        _ = feed(&machine, [noAnswer, noAnswer, noAnswer])
        // Link and WAN notifications say nothing about whether packets get through.
        #expect(machine.handle(.tunnelLinkUp) == [.ensureTunnelRoute])
        #expect(machine.handle(.wanLinkUp) == [])
        #expect(machine.state == .degraded)
        #expect(machine.handle(.probeSucceeded) == [])
        #expect(machine.state == .tunnelUp)
    }

    @Test func aReconnectionStartsAFreshCount() {
        var machine = upMachine(probing)
        _ = feed(&machine, [noAnswer, noAnswer, noAnswer, reconnecting])
        #expect(machine.handle(.tunnelConnected) == [])
        #expect(machine.state == .tunnelUp)
        #expect(machine.handle(noAnswer) == [])
        #expect(machine.state == .tunnelUp)
    }

    @Test func probeResultsOutsideTheTunnelStatesChangeNothing() {
        for state in [State.initial, .addressAssigned, .tunnelConnecting, .killswitched] {
            var machine = Machine(timings: probing)
            _ = feed(&machine, Scenario.perState.first { $0.state == state }!.path)
            #expect(machine.handle(noAnswer) == [])
            #expect(machine.handle(.probeSucceeded) == [])
            #expect(machine.handle(.timerFired(.probe)) == [])
            #expect(machine.state == state)
        }
    }

    @Test func theProbeTimerStopsWhileTheTunnelIsDown() {
        var machine = upMachine(probing)
        _ = machine.handle(reconnecting)
        #expect(machine.handle(.timerFired(.probe)) == [])
        // Up again: the timer starts again.
        #expect(machine.handle(.tunnelConnected) == [.scheduleTimer(.probe, after: .seconds(10))])
    }

    @Test func noProbeWithoutAnInterval() {
        var machine = upMachine(.exact)
        #expect(machine.handle(.timerFired(.probe)) == [])
    }
}

@Suite struct WANLinkTests {
    @Test func wanDownDegradesUntilItReturns() {
        var machine = upMachine(.exact)
        #expect(machine.handle(.wanLinkDown) == [])
        #expect(machine.state == .degraded)
        #expect(machine.reason == "the WAN link is down")
        #expect(machine.requestedPolicy == .up) // LAN -> tun0 only, as ever
        #expect(machine.handle(.wanLinkUp) == [])
        #expect(machine.state == .tunnelUp)
    }

    @Test func theTunnelDoesNotComeUpWhileTheWANIsDown() {
        var machine = Machine(timings: .exact)
        _ = feed(&machine, Scenario.tunnelConnecting.path + [.wanLinkDown, .tunnelConnected, .tunnelLinkUp])
        #expect(machine.state == .tunnelConnecting)
        #expect(machine.handle(.wanLinkUp) == [.applyFirewall(.up)])
        #expect(machine.state == .tunnelUp)
    }

    @Test func probeFailuresWhileTheWANIsDownDoNotReconnect() {
        var machine = upMachine(probing)
        _ = machine.handle(.wanLinkDown)
        #expect(feed(&machine, [noAnswer, noAnswer, noAnswer]) == [])
    }
}

@Suite struct CrashLoopTests {
    private let timings = Timings(jitter: 0, crashLoopExits: 3, crashLoopWindow: .seconds(60),
                                  crashLoopBackoff: .seconds(10), crashLoopCap: .seconds(25))

    private func exitAndRespawn(_ machine: inout Machine) -> [Action] {
        let actions = machine.handle(.tunnelProcessExited(.exited(1)))
        if machine.state == .tunnelConnecting { _ = feed(&machine, [.timerFired(.respawn), started]) }
        return actions
    }

    @Test func exitsWithinTheWindowKillswitchThenRetry() {
        var machine = Machine(timings: timings)
        _ = feed(&machine, Scenario.tunnelConnecting.path)
        #expect(exitAndRespawn(&machine) == [.forgetTunnelProcess, .scheduleTimer(.crashWindow, after: .seconds(60)),
                                             .scheduleTimer(.respawn, after: .milliseconds(250))])
        #expect(exitAndRespawn(&machine) == [.forgetTunnelProcess, .scheduleTimer(.respawn, after: .milliseconds(500))])
        #expect(exitAndRespawn(&machine) == [.forgetTunnelProcess, .applyFirewall(.lockdown), .cancelTimer(.respawn),
                                             .cancelTimer(.crashWindow), .scheduleTimer(.retry, after: .seconds(10))])
        #expect(machine.state == .killswitched)
        #expect(machine.reason == "crash loop: OpenVPN ended 3 times within 60.0 seconds without bringing the tunnel up")
        _ = machine.handle(.firewallCommitted(.lockdown))
        // The retry starts over: address, connecting policy, OpenVPN.
        #expect(machine.handle(.timerFired(.retry)) == [.applyFirewall(.connecting)])
        #expect(machine.handle(.firewallCommitted(.connecting)) == [.startTunnel])
        #expect(machine.state == .tunnelConnecting)
        _ = machine.handle(started)
        // A second loop waits twice as long, within the cap.
        _ = exitAndRespawn(&machine)
        _ = exitAndRespawn(&machine)
        #expect(exitAndRespawn(&machine).contains(.scheduleTimer(.retry, after: .seconds(20))))
        _ = feed(&machine, [.firewallCommitted(.lockdown), .timerFired(.retry), .firewallCommitted(.connecting), started])
        _ = exitAndRespawn(&machine)
        _ = exitAndRespawn(&machine)
        #expect(exitAndRespawn(&machine).contains(.scheduleTimer(.retry, after: .seconds(25))))
    }

    @Test func theWindowClosingForgetsEarlierExits() {
        var machine = Machine(timings: timings)
        _ = feed(&machine, Scenario.tunnelConnecting.path)
        _ = exitAndRespawn(&machine)
        _ = exitAndRespawn(&machine)
        #expect(machine.handle(.timerFired(.crashWindow)) == [])
        #expect(exitAndRespawn(&machine).dropFirst().first == .scheduleTimer(.crashWindow, after: .seconds(60)))
        #expect(machine.state == .tunnelConnecting)
    }

    @Test func theTunnelComingUpForgetsEarlierExits() {
        var machine = Machine(timings: timings)
        _ = feed(&machine, Scenario.tunnelConnecting.path)
        _ = exitAndRespawn(&machine)
        _ = exitAndRespawn(&machine)
        _ = feed(&machine, [.tunnelControlConnected, .tunnelConnected, .tunnelLinkUp])
        #expect(machine.state == .tunnelUp)
        // Killed ten times while up, each time recovering: never a crash loop.
        for _ in 0..<10 {
            _ = exitAndRespawn(&machine)
            _ = feed(&machine, [.tunnelConnected, .tunnelLinkUp])
            #expect(machine.state == .tunnelUp)
        }
    }

    @Test func spawnFailuresCountToo() {
        var machine = Machine(timings: timings)
        _ = feed(&machine, Scenario.tunnelConnecting.path + [.tunnelProcessExited(.exited(1))])
        for _ in 0..<2 {
            _ = machine.handle(.timerFired(.respawn))
            _ = machine.handle(.tunnelStartFailed("ENOENT"))
        }
        #expect(machine.state == .killswitched)
    }
}

@Suite struct JitterTests {
    @Test func delaysAreShortenedByAtMostTheJitter() {
        let timings = Timings(jitter: 0.5, crashLoopExits: nil)
        var delays: [Duration] = []
        for seed in UInt64(0)..<50 {
            var machine = Machine(timings: timings, seed: seed)
            _ = feed(&machine, Scenario.tunnelConnecting.path)
            for action in machine.handle(.tunnelProcessExited(.exited(1))) {
                if case .scheduleTimer(.respawn, let after) = action { delays.append(after) }
            }
        }
        #expect(delays.count == 50)
        #expect(delays.allSatisfy { $0 > .milliseconds(125) && $0 <= .milliseconds(250) })
        // Spread out, not one value: routers restarting together do not retry in lock-step.
        #expect(Set(delays).count > 40)
    }

    @Test func theSameSeedGivesTheSameDelays() {
        func delays(_ seed: UInt64) -> [Action] {
            var machine = Machine(timings: Timings(crashLoopExits: nil), seed: seed)
            _ = feed(&machine, Scenario.tunnelConnecting.path)
            return (0..<5).flatMap { _ in machine.handle(.tunnelProcessExited(.exited(1))) + feed(&machine, [.timerFired(.respawn), started]) }
        }
        #expect(delays(7) == delays(7))
        #expect(delays(7) != delays(8))
    }
}

@Suite struct ReloadTests {
    @Test func reloadAfterRejectedCredentialsConnectsAgain() {
        var machine = machine(in: .killswitched)
        #expect(machine.reason == "authentication failed: the server rejected the credentials")
        #expect(machine.handle(.reloadRequested) == [.reloadConfiguration])
        #expect(machine.handle(reloaded) == [.cancelTimer(.retry), .applyFirewall(.connecting)])
        #expect(machine.handle(.firewallCommitted(.connecting)) == [.startTunnel])
        _ = feed(&machine, [started, .tunnelControlConnected, .tunnelHeld])
        #expect(machine.handle(.credentialsRequested) == [.sendCredentials])
        _ = feed(&machine, [.tunnelConnected, .tunnelLinkUp])
        #expect(machine.state == .tunnelUp)
    }

    @Test func aRefusedReloadChangesNothing() {
        let refusal = Event.reloadRefused("CREDENTIALS_FILE=/run/secrets/x must hold a username line and a password line")
        for scenario in Scenario.all where !scenario.path.contains(.reloadRequested) {
            var machine = scenario.machine()
            let before = machine
            #expect(machine.handle(refusal) == [])
            #expect(machine == before)
        }
        // While a SIGHUP's files are read, the refusal ends the reading (and a SIGHUP that came
        // meanwhile reads them again); nothing else changes.
        var reading = Scenario.tunnelUpReloading.machine()
        #expect(reading.handle(refusal) == [])
        #expect(reading == Scenario.tunnelUp.machine())
        var again = Scenario.tunnelUpReloadingAgain.machine()
        #expect(again.handle(refusal) == [.reloadConfiguration])
        #expect(again == Scenario.tunnelUpReloading.machine())
    }

    @Test func reloadWhileUpRestartsOpenVPNWithoutBackoff() {
        var machine = machine(in: .tunnelUp)
        #expect(machine.handle(reloaded) == [.applyFirewall(.connecting), .stopTunnel])
        #expect(machine.state == .tunnelConnecting)
        #expect(machine.handle(.tunnelProcessExited(.signaled(15))) == [.forgetTunnelProcess, .startTunnel])
    }

    @Test func reloadWhileWaitingToRespawnSpawnsAtOnce() {
        var machine = machine(in: .tunnelConnecting)
        _ = machine.handle(.tunnelProcessExited(.exited(1)))
        #expect(machine.handle(reloaded) == [.applyFirewall(.connecting), .cancelTimer(.respawn), .startTunnel])
    }

    @Test func reloadIsIgnoredBeforeTheConfigurationAndWhileStopping() {
        var fresh = Machine(timings: .exact)
        _ = fresh.handle(.start)
        #expect(fresh.handle(.reloadRequested) == [])
        var stopping = Scenario.shuttingDown.machine()
        #expect(stopping.handle(.reloadRequested) == [])
        #expect(stopping.handle(reloaded) == [])
    }
}
