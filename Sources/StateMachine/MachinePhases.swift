extension Machine {
    /// Where the machine is, with the data that means something only there. `state` names it.
    enum Phase: Hashable, Sendable {
        case initial(Starting)
        case addressAssigned(Recovery)
        case tunnelConnecting(Connecting)
        case tunnelUp(Probing)
        case degraded(Probing)
        case killswitched(Lockout)
        /// SIGTERM/SIGINT: the lockdown is requested, the tunnel told to stop; the exit follows its
        /// end. Shown as Killswitched.
        case stopping

        /// Whether entering this phase keeps the reason (the caller sets it).
        var keepsReason: Bool {
            switch self {
            case .degraded, .killswitched, .stopping: true
            default: false
            }
        }
    }

    /// Init: the lockdown and the configuration, then the host names' resolution.
    struct Starting: Hashable, Sendable {
        enum Step: Hashable, Sendable {
            /// Nothing may touch the network before the lockdown has been requested.
            case notStarted
            /// The lockdown and the configuration are requested.
            case loading
            case resolving(Resolution)
            /// The configuration is accepted: waiting for the lockdown and the LAN address.
            case configured
        }

        var step = Step.notStarted
        /// The lockdown was not committed before the configuration was judged: a bad
        /// configuration still exits 78, a good one 71.
        var lockdownFailure: String?
    }

    /// The remotes' host names, resolved through the resolving ruleset, which only the lockdown
    /// closes again.
    struct Resolution: Hashable, Sendable {
        enum Step: Hashable, Sendable {
            /// The configuration came before the lockdown's commit: resolution waits for it.
            case awaitingLockdown
            /// The resolving ruleset is requested.
            case opening
            /// It is committed; the resolver asks.
            case open
            /// Resolved; the lockdown is requested again.
            case closing(addresses: [String: [IPv4Address]], failures: [String: String])
        }

        var names: [String]
        var step: Step

        /// The kernel may hold the resolving ruleset (requested or committed, not yet replaced).
        var mayBeOpen: Bool {
            switch step {
            case .awaitingLockdown: false
            case .opening, .open, .closing: true
            }
        }
    }

    /// How the tunnel fared since it was last up: the respawn backoff and the crash-loop count.
    /// TunnelUp forgets it.
    struct Recovery: Hashable, Sendable {
        var respawnAttempt = 0
        /// Tunnel process ends since the tunnel was last up, within the current crash window.
        var exitsWithoutTunnel = 0
        /// Crash loops since the tunnel was last up (their backoff doubles).
        var crashLoops = 0
    }

    struct Connecting: Hashable, Sendable {
        var recovery = Recovery()
        /// The process is being stopped to start again with a reloaded configuration, at once.
        var restartAfterExit = false
    }

    /// TunnelUp and Degraded: the DNS probe's consecutive failures.
    struct Probing: Hashable, Sendable {
        var failures = 0
    }

    struct Lockout: Hashable, Sendable {
        enum Cause: Hashable, Sendable {
            /// Rejected credentials: waits for new ones (SIGHUP), never retried with the old.
            case authentication
            /// The tunnel kept ending: retried after a growing delay.
            case crashLoop
            /// A firewall or address failure: retried on a timer, or when the address returns.
            case transient
            /// OpenVPN refused its configuration (after the tunnel was up once, or after a reload:
            /// otherwise `run` exits 78): waits for a fixed one (SIGHUP), never retried as is.
            case configuration

            /// Only a SIGHUP reload lifts it; later failures do not turn it into one a timer lifts.
            var waitsForReload: Bool { self == .authentication || self == .configuration }
        }

        var cause: Cause
        var recovery: Recovery
    }

    /// The tunnel's process, which may outlive the phase that started it (it is stopped, not gone,
    /// when the switch is killed).
    enum TunnelProcess: Hashable, Sendable {
        case stopped
        case live(Session)
    }

    struct Session: Hashable, Sendable {
        var pid: Int32?
        /// The start was reported (`tunnelStarted`); until then it may still fail.
        var started = false
        /// The tunnel reports a connection.
        var connected = false
        /// The tunnel waits to be released, and the policy that lets it out is not committed yet.
        var holdPending = false
        /// The tunnel's output: not read, read until it ends, or ended (with the configuration
        /// error it printed, if any).
        var output = TunnelOutput.unwatched
        /// The process ended while its output was still open: its end waits for the output's.
        var heldExit: ExitStatus?
    }

    enum TunnelOutput: Hashable, Sendable {
        case unwatched
        case open
        case ended(configurationError: String?)
    }

    var session: Session? {
        if case .live(let session) = process { session } else { nil }
    }

    mutating func updateSession(_ change: (inout Session) -> Void) {
        guard case .live(var session) = process else { return }
        change(&session)
        process = .live(session)
    }

    /// The tunnel reports a connection and tun0 is up.
    var tunnelRunning: Bool { (session?.connected ?? false) && tunnelLinkUp }

    /// The recovery data of the phase the machine leaves for a failure or an exit.
    var recovery: Recovery {
        switch phase {
        case .addressAssigned(let recovery): recovery
        case .tunnelConnecting(let connecting): connecting.recovery
        case .killswitched(let lockout): lockout.recovery
        case .initial, .tunnelUp, .degraded, .stopping: Recovery()
        }
    }

    // MARK: The tunnel process, in every phase but shutdown

    /// Events about the tunnel and its control channel: each only while its process lives. The
    /// phases that react further (TunnelConnecting, TunnelUp, Degraded) handle the rest first.
    mutating func handleTunnelProcess(_ event: Event) -> [Action] {
        guard let session else { return [] }
        switch event {
        case .tunnelStarted(let pid):
            guard !session.started else { return [] }
            updateSession { $0.started = true; $0.pid = pid }
            return []
        case .tunnelStartFailed(let message):
            guard !session.started else { return [] }
            process = .stopped
            reason = "\(tunnelName) could not be started: \(message)"
            return []
        case .tunnelProcessExited:
            process = .stopped
            return [.forgetTunnelProcess]
        case .tunnelControlConnected:
            return [.watchTunnelState]
        case .tunnelHeld:
            if case .killswitched = phase { return [] }
            if transportCommitted { return [.releaseTunnel] }
            updateSession { $0.holdPending = true }
            return []
        case .credentialsRequested:
            if case .killswitched = phase { return [] }
            return [.sendCredentials]
        case .authenticationFailed:
            return killswitch(.authentication, "authentication failed: the server rejected the credentials")
        case .tunnelConnected:
            updateSession { $0.connected = true }
            return []
        case .tunnelDisconnected:
            updateSession { $0.connected = false }
            return []
        case .tunnelFatal(let message):
            reason = "\(tunnelName): \(message)"
            return []
        case .remoteRequested(let host, let port, let proto):
            return answerRemote(RemoteQuestion(host: host, port: port, proto: proto))
        case .tunnelCommandFailed:
            // A tunnel that cannot be talked to is of no use; OpenVPN ends by itself when its
            // management connection is gone (`--management-client`), and SIGTERM makes sure. Its
            // end then takes the usual way: respawn after the backoff, or the crash-loop limit.
            return [.stopTunnel]
        default:
            return []
        }
    }

    /// Starts the tunnel unless its process still lives.
    mutating func spawn() -> [Action] {
        guard case .stopped = process else { return [] }
        process = .live(Session())
        return [.startTunnel]
    }

    /// Releases a hold that waited for the policy now committed.
    mutating func releasePendingHold() -> [Action] {
        guard let session, session.holdPending, transportCommitted else { return [] }
        updateSession { $0.holdPending = false }
        return [.releaseTunnel]
    }
}
