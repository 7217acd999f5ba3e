// AddressAssigned, TunnelConnecting, TunnelUp and Degraded: the tunnel is started once the
// connecting policy is committed, released only under a committed policy that lets its transport
// out, and up once it reports a connection over a tun0 that is up.
extension Machine {
    mutating func handleAddressAssigned(_ event: Event, _ recovery: Recovery) -> [Action] {
        switch event {
        case .firewallCommitted(let policy):
            guard noteCommitted(policy) else { return [] }
            var actions = enter(.tunnelConnecting(Connecting(recovery: recovery)))
            actions += spawn()
            actions += releasePendingHold()
            return actions
        case .timerFired(.crashWindow):
            var recovery = recovery
            recovery.exitsWithoutTunnel = 0
            phase = .addressAssigned(recovery)
            return []
        case .configurationReloaded(let reload):
            return adopt(reload) ? recommit() : []
        default:
            return handleCommitsAndFailures(event) ?? handleCommon(event)
        }
    }

    mutating func handleConnecting(_ event: Event, _ connecting: Connecting) -> [Action] {
        var connecting = connecting
        switch event {
        case .tunnelLinkUp:
            tunnelLinkUp = true
            return [.ensureTunnelRoute] + connectedAndUp()
        case .wanLinkUp:
            return wanCameUp() + connectedAndUp()
        case .tunnelStartFailed(let message):
            guard let session, !session.started else { return [] }
            process = .stopped
            reason = "\(tunnelName) could not be started: \(message)"
            return afterTunnelEnded()
        case .tunnelProcessExited(let status):
            guard let ended = session else { return [] }
            process = .stopped
            if connecting.restartAfterExit {
                // Stopped to start again with a reloaded configuration: no backoff.
                connecting.restartAfterExit = false
                phase = .tunnelConnecting(connecting)
                return [.forgetTunnelProcess] + spawn()
            }
            if case .ended(let error?) = ended.output {
                // OpenVPN refused its configuration: no respawn would change that.
                return [.forgetTunnelProcess] + configurationRefused(error, status)
            }
            reason = "\(tunnelName) \(status)"
            return [.forgetTunnelProcess] + afterTunnelEnded()
        case .tunnelConnected:
            guard session != nil else { return [] }
            updateSession { $0.connected = true }
            return connectedAndUp()
        case .timerFired(.respawn):
            guard case .stopped = process else { return [] }
            return spawn()
        case .timerFired(.crashWindow):
            connecting.recovery.exitsWithoutTunnel = 0
            phase = .tunnelConnecting(connecting)
            return []
        case .configurationReloaded(let reload):
            return adopt(reload) ? restartTunnel(connecting.recovery) : []
        default:
            return handleCommitsAndFailures(event) ?? handleCommon(event)
        }
    }

    mutating func handleUp(_ event: Event, _ probing: Probing) -> [Action] {
        switch event {
        case .tunnelLinkUp:
            tunnelLinkUp = true
            return [.ensureTunnelRoute]
        case .tunnelLinkDown:
            tunnelLinkUp = false
            // The tunnel reopens its device only when it connects again; when the device was
            // deleted from outside it would otherwise go on reading a dead descriptor.
            let reconnect = session?.started == true
            return degrade("the tunnel interface went down", probing) + (reconnect ? [.reconnectTunnel] : [])
        case .wanLinkDown:
            wanUp = false
            return degrade("the WAN link is down", probing)
        case .tunnelConnected:
            guard session != nil else { return [] }
            updateSession { $0.connected = true }
            // A new connection: the old one's probe failures say nothing about it.
            phase = .tunnelUp(Probing())
            return []
        case .tunnelDisconnected(let why):
            guard session != nil else { return [] }
            updateSession { $0.connected = false }
            return degrade(why, probing)
        case .probeSucceeded:
            phase = .tunnelUp(Probing())
            return []
        default:
            return handleRunning(event, probing)
        }
    }

    mutating func handleDegraded(_ event: Event, _ probing: Probing) -> [Action] {
        switch event {
        case .tunnelLinkUp:
            tunnelLinkUp = true
            return [.ensureTunnelRoute] + connectedAndUp()
        case .wanLinkUp:
            return wanCameUp() + connectedAndUp()
        case .tunnelConnected:
            guard session != nil else { return [] }
            updateSession { $0.connected = true }
            phase = .degraded(Probing())
            return connectedAndUp()
        case .probeSucceeded:
            phase = .degraded(Probing())
            return connectedAndUp()
        default:
            return handleRunning(event, probing)
        }
    }

    /// What TunnelUp and Degraded answer alike: the tunnel's end, the probe, a reload.
    private mutating func handleRunning(_ event: Event, _ probing: Probing) -> [Action] {
        switch event {
        case .tunnelProcessExited(let status):
            guard session != nil else { return [] }
            return tunnelEnded(status)
        case .timerFired(.probe):
            return probeTick()
        case .probeFailed(let why):
            return probeFailed(why, probing)
        case .configurationReloaded(let reload):
            return adopt(reload) ? restartTunnel(Recovery()) : []
        default:
            return handleCommitsAndFailures(event) ?? handleCommon(event)
        }
    }

    /// What every phase from AddressAssigned to Degraded answers alike: a commit of the policy
    /// requested (which releases a hold that waited for it) and the failures that kill the switch.
    /// nil for any other event.
    private mutating func handleCommitsAndFailures(_ event: Event) -> [Action]? {
        switch event {
        case .firewallCommitted(let policy):
            guard noteCommitted(policy) else { return [] }
            return releasePendingHold()
        case .firewallFailed(let policy, let message):
            guard policy == requested else { return [] }
            return killswitch(.transient, "the \(policy) ruleset was not committed: \(message)")
        case .addressFailed(let message):
            return killswitch(.transient, "the LAN address could not be set: \(message)")
        case .overlayLinkFailed(let message) where overlay != nil:
            return killswitch(.transient, overlayLinkFailure(message))
        default:
            return nil
        }
    }

    // MARK: Steps

    /// TunnelConnecting or Degraded to TunnelUp, once the tunnel reports a connection, tun0 is
    /// up, the WAN too, and (Degraded) the probe no longer fails.
    private mutating func connectedAndUp() -> [Action] {
        guard tunnelRunning, wanUp else { return [] }
        switch phase {
        case .tunnelConnecting: break
        case .degraded(let probing) where probing.failures < probeFailureLimit: break
        default: return []
        }
        var actions = enter(.tunnelUp(Probing()))
        if let interval = probeInterval, !probeTimerPending {
            probeTimerPending = true
            actions.append(.scheduleTimer(.probe, after: interval))
        }
        return actions
    }

    private mutating func degrade(_ why: String, _ probing: Probing) -> [Action] {
        let actions = enter(.degraded(probing))
        reason = why
        return actions
    }

    /// The tunnel's process ended while the tunnel was up or degraded: back to TunnelConnecting.
    private mutating func tunnelEnded(_ status: ExitStatus) -> [Action] {
        process = .stopped
        var actions: [Action] = [.forgetTunnelProcess]
        actions += enter(.tunnelConnecting(Connecting()))
        reason = "\(tunnelName) \(status)"
        actions += afterTunnelEnded()
        return actions
    }

    private mutating func probeTick() -> [Action] {
        probeTimerPending = false
        guard let interval = probeInterval, tunnelRunning else { return [] }
        probeTimerPending = true
        return [.probeTunnel, .scheduleTimer(.probe, after: interval)]
    }

    /// Every `probeFailureLimit` failures in a row (while the tunnel runs and the WAN is up): the
    /// tunnel carries nothing; the tunnel, which may not have noticed, connects again.
    private mutating func probeFailed(_ why: String, _ probing: Probing) -> [Action] {
        guard tunnelRunning, wanUp else { return [] }
        var probing = probing
        probing.failures += 1
        let degraded = if case .degraded = phase { true } else { false }
        guard probing.failures % probeFailureLimit == 0 else {
            phase = degraded ? .degraded(probing) : .tunnelUp(probing)
            return []
        }
        let why = "the DNS probe failed \(probing.failures) times in a row: \(why)"
        var actions: [Action] = []
        if degraded {
            phase = .degraded(probing)
            reason = why
        } else {
            actions = degrade(why, probing)
        }
        return actions + [.reconnectTunnel]
    }

    /// New credentials and configuration are in use: the tunnel starts again with them, without
    /// backoff, and the ruleset (endpoints, DNS, forwards) is committed again.
    private mutating func restartTunnel(_ recovery: Recovery) -> [Action] {
        var connecting = Connecting(recovery: recovery)
        connecting.recovery.respawnAttempt = 0
        connecting.recovery.exitsWithoutTunnel = 0
        let live = session != nil
        connecting.restartAfterExit = live
        var actions = enter(.tunnelConnecting(connecting))
        if actions.isEmpty { actions = recommit() }
        if live {
            updateSession { $0.connected = false }
            actions.append(.stopTunnel)
        } else {
            actions.append(.cancelTimer(.respawn))
            actions += spawn()
        }
        return actions
    }
}
