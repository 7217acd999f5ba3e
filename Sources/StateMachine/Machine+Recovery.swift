// Killswitched and shutdown: the lockdown, and how the machine leaves it (a retry timer, the LAN
// address returning, new credentials) or exits.
extension Machine {
    mutating func handleKillswitched(_ event: Event, _ lockout: Lockout) -> [Action] {
        var lockout = lockout
        switch event {
        case .firewallCommitted(let policy):
            _ = noteCommitted(policy)
            return []
        case .firewallFailed(let policy, let message):
            guard policy == requested else { return [] }
            return killswitch(.transient, "the \(policy) ruleset was not committed: \(message)")
        case .lanAddressPresent:
            addressPresent = true
            guard lockout.cause == .transient, committed == .lockdown else { return [] }
            return enter(.addressAssigned(lockout.recovery))
        case .addressFailed, .overlayLinkFailed:
            // The retry timer tries again.
            return []
        case .timerFired(.retry):
            guard !lockout.cause.waitsForReload else { return [] }
            lockout.recovery.exitsWithoutTunnel = 0
            if addressPresent { return enter(.addressAssigned(lockout.recovery)) }
            phase = .killswitched(lockout)
            return ensureLAN() + [.scheduleTimer(.retry, after: timings.retry)]
        case .timerFired(.crashWindow):
            lockout.recovery.exitsWithoutTunnel = 0
            phase = .killswitched(lockout)
            return []
        case .configurationReloaded(let reload):
            guard adopt(reload) else { return [] }
            // Whatever held the machine back because of the old credentials or configuration
            // (an authentication failure, a crash loop) is lifted.
            var actions: [Action] = [.cancelTimer(.retry)]
            if addressPresent, committed == .lockdown {
                actions += enter(.addressAssigned(Recovery()))
            } else {
                // Left as soon as the address is back, like a transient failure.
                phase = .killswitched(Lockout(cause: .transient, recovery: Recovery()))
                actions += ensureLAN()
                actions += recommit()
            }
            return actions
        default:
            return handleCommon(event)
        }
    }

    /// After SIGTERM: the lockdown is requested; wait for the tunnel to go, then exit.
    mutating func handleStopping(_ event: Event) -> [Action] {
        switch event {
        case .firewallCommitted(let policy):
            _ = noteCommitted(policy)
            return []
        case .tunnelStarted(let pid):
            guard let session, !session.started else { return [] }
            updateSession { $0.started = true; $0.pid = pid }
            // The start completed after the SIGTERM was due: stop it again.
            return [.stopTunnel]
        case .tunnelProcessExited, .tunnelStartFailed:
            guard session != nil else { return [] }
            process = .stopped
            // The exit closes the tunnel's control channel: nothing to forget first.
            return [.cancelTimer(.stopDeadline), .exit(code: ExitCode.success, message: nil)]
        case .timerFired(.stopDeadline):
            // An exit held for the output's end is an exit: nothing left to kill.
            guard let session, session.heldExit == nil else { return [] }
            return [.killTunnel]
        case .firewallTampered:
            // The lockdown must hold until the very end, whoever removed it.
            return recommit()
        case .firewallNotificationsLost:
            return verify()
        default:
            return []
        }
    }

    /// SIGTERM/SIGINT, in any phase: the lockdown (again, if the resolving ruleset may be in the
    /// kernel), timers cancelled, the tunnel stopped; the exit once it has gone.
    mutating func shutDown() -> [Action] {
        var actions: [Action] = []
        var resolutionMayBeOpen = false
        if case .initial(let starting) = phase, case .resolving(let resolution) = starting.step {
            resolutionMayBeOpen = resolution.mayBeOpen
        }
        if requested != .lockdown || resolutionMayBeOpen {
            requested = .lockdown
            actions.append(.applyFirewall(.lockdown))
        }
        phase = .stopping
        reason = "shutting down"
        // The lockdown closes a resolution under way; its answer no longer matters.
        provider.reresolution = nil
        actions += [.cancelTimer(.respawn), .cancelTimer(.retry)]
        if session == nil {
            actions.append(.exit(code: ExitCode.success, message: nil))
        } else {
            actions += [.stopTunnel, .scheduleTimer(.stopDeadline, after: timings.stopGrace)]
        }
        return actions
    }

    /// Killswitched: the lockdown, the tunnel stopped, a retry if the failure may be transient.
    mutating func killswitch(_ cause: Lockout.Cause, _ why: String) -> [Action] {
        var cause = cause
        // Rejected credentials wait for new ones (and a refused configuration for a fixed one): a
        // later transient failure must not arm a retry that would replay them (and risk an
        // account lock-out).
        if case .killswitched(let lockout) = phase, lockout.cause.waitsForReload { cause = lockout.cause }
        var actions = enter(.killswitched(Lockout(cause: cause, recovery: recovery)))
        reason = why
        // The lockdown closes a resolution under way, and the tunnel that asked is stopped.
        provider.reresolution = nil
        updateSession { $0.holdPending = false }
        actions.append(.cancelTimer(.respawn))
        if session != nil { actions.append(.stopTunnel) }
        if cause == .transient { actions.append(.scheduleTimer(.retry, after: timings.retry)) }
        return actions
    }

    /// The tunnel ended or could not be started while it is wanted (TunnelConnecting): start it
    /// again after a backoff, unless this makes a crash loop.
    mutating func afterTunnelEnded() -> [Action] {
        guard case .tunnelConnecting(var connecting) = phase else { return [] }
        guard let limit = timings.crashLoopExits else {
            let actions = scheduleRespawn(&connecting.recovery)
            phase = .tunnelConnecting(connecting)
            return actions
        }
        connecting.recovery.exitsWithoutTunnel += 1
        if connecting.recovery.exitsWithoutTunnel >= limit {
            let window = timings.crashLoopWindow
            connecting.recovery.exitsWithoutTunnel = 0
            let loops = connecting.recovery.crashLoops
            let delay = jittered(min(timings.crashLoopCap, timings.crashLoopBackoff * (1 << min(loops, 20))))
            connecting.recovery.crashLoops += 1
            phase = .tunnelConnecting(connecting)
            var actions = killswitch(.crashLoop, "crash loop: \(tunnelName) ended \(limit) times within \(window) without bringing the tunnel up")
            actions += [.cancelTimer(.crashWindow), .scheduleTimer(.retry, after: delay)]
            return actions
        }
        var actions: [Action] = []
        if connecting.recovery.exitsWithoutTunnel == 1 {
            actions.append(.scheduleTimer(.crashWindow, after: timings.crashLoopWindow))
        }
        actions += scheduleRespawn(&connecting.recovery)
        phase = .tunnelConnecting(connecting)
        return actions
    }

    private mutating func scheduleRespawn(_ recovery: inout Recovery) -> [Action] {
        let delay = jittered(min(timings.respawnCap, timings.respawnBase * (1 << min(recovery.respawnAttempt, 20))))
        recovery.respawnAttempt += 1
        return [.scheduleTimer(.respawn, after: delay)]
    }
}
