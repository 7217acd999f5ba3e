/// A command the supervisor sends to the tunnel over its control channel. Backend-neutral: the
/// OpenVPN backend sends them over the management interface, a WireGuard backend would use UAPI.
public enum TunnelCommand: Hashable, Sendable {
    /// Start reporting the connection's state (OpenVPN: `state on all`).
    case watchState
    /// Let the held tunnel connect (OpenVPN: `hold release`).
    case release
    /// Answer the tunnel's request for credentials (OpenVPN: `username`/`password "Auth"`).
    case sendCredentials
    /// Drop the connection and connect again (OpenVPN: `signal SIGUSR1`).
    case reconnect
    /// Answer the tunnel's question about a remote (OpenVPN: `remote ACCEPT|SKIP|MOD`).
    case answerRemote(RemoteAnswer)

    public var label: String {
        switch self {
        case .watchState: "watchState"
        case .release: "release"
        case .sendCredentials: "sendCredentials"
        case .reconnect: "reconnect"
        case .answerRemote(let answer): "answerRemote(\(answer.command))"
        }
    }
}

/// What happened: a watcher's report (translated by the supervisor), or the outcome of an action.
public enum Event: Hashable, Sendable {
    // MARK: Start-up
    case start
    /// The configuration was read and validated (the loader's result for `loadConfiguration`).
    case configurationLoaded(LoadedConfiguration)
    /// The configuration is unusable: the message names the variable and its value.
    case configurationRejected(String)
    /// LAN_IF or WAN_IF names no interface in this network namespace.
    case interfaceMissing(variable: String, name: String)

    // MARK: Name resolution (remotes given by host name)
    /// The resolving ruleset is committed: DNS to the nameservers may leave by the WAN.
    case nameResolutionOpened
    /// The resolving ruleset was not committed (the lockdown still holds).
    case nameResolutionFailed(String)
    /// The resolver's answers: host name -> addresses, host name -> why it did not resolve; how
    /// long it took (for the status).
    case namesResolved(addresses: [String: [IPv4Address]], failures: [String: String], elapsed: Duration = .zero)

    // MARK: Firewall
    case firewallCommitted(FirewallPolicy)
    case firewallFailed(FirewallPolicy, String)
    /// Someone else changed or removed table `inet vpnsup` (the nftables monitor says what), or
    /// notifications were lost and the table no longer reads back as committed. The kernel no
    /// longer holds what was committed: the policy is requested again.
    case firewallTampered(String)
    /// The nftables monitor lost notifications: the table may have changed unseen.
    case firewallNotificationsLost
    /// The table reads back as the policy requested (after lost notifications).
    case firewallIntact(FirewallPolicy)

    // MARK: LAN address and policy routing
    /// `ensureLANAddress` succeeded: the link is up and the address requested (netlink confirms
    /// with `lanAddressPresent`).
    case lanAddressConfigured
    /// netlink shows IP_ADDR on the LAN interface.
    case lanAddressPresent
    case lanAddressMissing
    case addressFailed(String)
    /// vpnsup's routing table and the rule sending the LAN's traffic to it are in place.
    case policyRoutingInstalled
    case policyRoutingFailed(String)
    /// The tunnel's default route is in vpnsup's routing table.
    case tunnelRouteInstalled
    case tunnelRouteFailed(String)

    // MARK: The Kubernetes gateway's overlay (POD_CIDRS set: LAN_IF is a vxlan link vpnsup owns)
    /// LAN_IF is the vxlan link the configuration describes, up (`ensureOverlayLink`'s result).
    case overlayLinkReady
    case overlayLinkFailed(String)
    /// netlink: LAN_IF was removed or set down.
    case overlayLinkLost
    /// The route of POD_CIDRS by the WAN's next hop is in the main table.
    case overlayRouteInstalled
    case overlayRouteFailed(String)
    /// netlink: a route of POD_CIDRS was removed from the main table.
    case overlayRouteMissing

    // MARK: Links
    /// The tunnel interface exists and is up with carrier.
    case tunnelLinkUp
    /// The tunnel interface went down or was removed.
    case tunnelLinkDown
    /// The WAN interface is up with carrier again.
    case wanLinkUp
    /// The WAN interface went down, lost its carrier or was removed.
    case wanLinkDown

    // MARK: The tunnel (backend-neutral)
    /// The tunnel was started; `pid` is its process (nil for a tunnel without one, e.g. a kernel link).
    case tunnelStarted(pid: Int32?)
    case tunnelStartFailed(String)
    /// The tunnel's process ended (reaped).
    case tunnelProcessExited(ExitStatus)
    /// The tunnel's control channel is connected (OpenVPN's management client).
    case tunnelControlConnected
    /// The tunnel waits to be released (OpenVPN's `>HOLD:`).
    case tunnelHeld
    /// The tunnel asks for the username and password.
    case credentialsRequested
    /// The server rejected the credentials.
    case authenticationFailed
    /// The tunnel reports a connection (OpenVPN: `>STATE:...,CONNECTED`).
    case tunnelConnected
    /// The tunnel reports it is not connected, and why (OpenVPN: any other `>STATE:`).
    case tunnelDisconnected(String)
    /// The tunnel reports a fatal error; it is about to end.
    case tunnelFatal(String)
    /// The tunnel asks which address to use for a remote (OpenVPN's `>REMOTE:host,port,proto`).
    case remoteRequested(host: String, port: UInt16?, proto: String)
    /// A command could not be sent over the tunnel's control channel.
    case tunnelCommandFailed(TunnelCommand, String)

    // MARK: WireGuard's handshakes (it sends no events: they are read when the machine asks)
    /// The peers were configured anew (a UAPI set with `replace_peers`: none has a handshake yet),
    /// at this wall-clock time (since the Unix epoch, the clock WireGuard stamps handshakes with).
    case tunnelPeersConfigured(at: Duration)
    /// The answer to `readTunnelPeers`: each peer's latest handshake and sent bytes, read at `at`.
    case tunnelPeersRead([WireGuardPeerSample], at: Duration)
    case tunnelPeersReadFailed(String)
    // MARK: The tunnel's own output (OpenVPN's configuration errors)
    /// The tunnel's output is read through a pipe: the process's end is judged once the output
    /// has ended too (`tunnelOutputEnded`), with what it said.
    case tunnelOutputWatched
    /// The tunnel's output ended (its process closed it by exiting). `configurationError`: why it
    /// refused its configuration before it first turned to the network (OpenVPN's "Options
    /// error" or the key it could not load, naming CONFIG's lines), nil for any other end.
    case tunnelOutputEnded(configurationError: String?)

    // MARK: The DNS probe
    /// The resolver answered through the tunnel.
    case probeSucceeded
    /// The resolver did not answer through the tunnel (why).
    case probeFailed(String)

    // MARK: Time and signals
    case timerFired(TimerID)
    case shutdownRequested
    /// SIGHUP: re-read the credentials and the OpenVPN configuration.
    case reloadRequested
    /// The credentials and configuration were read again; the machine judges them against the
    /// pins (`Machine.judge`) and uses them, or refuses them and keeps the old ones.
    case configurationReloaded(ReloadedConfiguration)
    /// The new credentials or configuration could not be read or parsed; the old ones stay in use.
    case reloadRefused(String)

    // MARK: Port forwards (PORT_FWD_FILE)
    /// PORT_FWD_FILE was read again (it changed, or SIGHUP) and validated.
    case portForwardsRead(PortForwardReading)
    /// `applyForwardChanges`: the kernel's maps hold the new forwards.
    case forwardChangesApplied(PortForwardDiff)
    /// `applyForwardChanges` failed: the transaction was refused (nothing changed), or the maps
    /// did not read back as the new forwards.
    case forwardChangesFailed(PortForwardDiff, String)
}

/// What the machine asks the effects to do, in order.
public enum Action: Hashable, Sendable {
    case applyFirewall(FirewallPolicy)
    /// Read and validate the configuration; reported as `configurationLoaded`,
    /// `configurationRejected` or `interfaceMissing`, later when files must be read (they are read
    /// off the interpreter and the effects, with a deadline, so the kill switch never waits on them).
    case loadConfiguration
    /// Commit the resolving ruleset (`Ruleset.resolving`: the lockdown plus marked DNS to the
    /// nameservers); reported as `nameResolutionOpened` / `nameResolutionFailed`. It is closed by
    /// committing the lockdown again.
    case openNameResolution
    /// Resolve these host names through the marked resolver; reported later as `namesResolved`.
    case resolveNames([String])
    /// Put IP_ADDR on the LAN interface and bring it up; reported as `lanAddressConfigured`, and
    /// netlink confirms.
    case ensureLANAddress
    /// vpnsup's routing table (`unreachable default`) and the rule `iif LAN_IF lookup` it.
    case ensurePolicyRouting
    /// `default dev tun0` in vpnsup's routing table (the kernel drops it when tun0 goes down).
    case ensureTunnelRoute
    /// The Kubernetes gateway: create LAN_IF as the overlay's vxlan link over WAN_IF (or leave,
    /// repair or replace it), up; reported as `overlayLinkReady` / `overlayLinkFailed`.
    case ensureOverlayLink
    /// The Kubernetes gateway: POD_CIDRS via the WAN's default next hop in the main table, above
    /// the tunnel's redirect of the default route, so the overlay's packets to the clients leave
    /// by the WAN; reported as `overlayRouteInstalled` / `overlayRouteFailed`.
    case ensureOverlayRoute
    /// Start the tunnel (OpenVPN: spawn it, held).
    case startTunnel
    /// Ask the tunnel for its state reports (OpenVPN: `state on all`).
    case watchTunnelState
    /// Let the tunnel connect (OpenVPN: `hold release`).
    case releaseTunnel
    case sendCredentials
    /// The tunnel drops its connection and connects again (OpenVPN: `signal SIGUSR1`).
    case reconnectTunnel
    case answerRemote(RemoteAnswer)
    /// SIGTERM to the tunnel's process.
    case stopTunnel
    /// SIGKILL to the tunnel's process.
    case killTunnel
    /// Read the peers' latest handshakes (WireGuard: UAPI `get=1`, off the effects' thread);
    /// reported as `tunnelPeersRead` / `tunnelPeersReadFailed`.
    case readTunnelPeers
    /// The tunnel's process was reaped: nobody may use its control channel until the next start
    /// (OpenVPN's management socket then refuses every peer, whoever queued up for it).
    case forgetTunnelProcess
    /// Ask the resolver a name through the tunnel; reported as `probeSucceeded` / `probeFailed`.
    case probeTunnel
    /// Re-read the credentials and the OpenVPN configuration; reported later (the files are read
    /// off the interpreter and the effects, with a deadline) as `configurationReloaded` or
    /// `reloadRefused`.
    case reloadConfiguration
    /// Read the table back; reported as `firewallIntact` or `firewallTampered`.
    case verifyFirewall(FirewallPolicy)
    /// Read PORT_FWD_FILE again; reported later as `portForwardsRead`.
    case readPortForwardFile
    /// Delete and add these elements of the forward maps in one transaction, nothing else;
    /// reported as `forwardChangesApplied` or `forwardChangesFailed`.
    case applyForwardChanges(PortForwardDiff)
    case scheduleTimer(TimerID, after: Duration)
    case cancelTimer(TimerID)
    case exit(code: Int32, message: String?)
}

extension Event {
    /// A short name for logs, the status and the documentation.
    public var label: String {
        switch self {
        case .start: "start"
        case .configurationLoaded(let loaded):
            RemotePins.hostNames(in: loaded.remotes).isEmpty ? "configurationLoaded" : "configurationLoaded(host names)"
        case .configurationRejected: "configurationRejected"
        case .interfaceMissing(let variable, _): "interfaceMissing(\(variable))"
        case .nameResolutionOpened: "nameResolutionOpened"
        case .nameResolutionFailed: "nameResolutionFailed"
        case .namesResolved: "namesResolved"
        case .firewallCommitted(let policy): "firewallCommitted(\(policy))"
        case .firewallFailed(let policy, _): "firewallFailed(\(policy))"
        case .firewallTampered: "firewallTampered"
        case .firewallNotificationsLost: "firewallNotificationsLost"
        case .firewallIntact(let policy): "firewallIntact(\(policy))"
        case .lanAddressConfigured: "lanAddressConfigured"
        case .lanAddressPresent: "lanAddressPresent"
        case .lanAddressMissing: "lanAddressMissing"
        case .addressFailed: "addressFailed"
        case .policyRoutingInstalled: "policyRoutingInstalled"
        case .policyRoutingFailed: "policyRoutingFailed"
        case .tunnelRouteInstalled: "tunnelRouteInstalled"
        case .tunnelRouteFailed: "tunnelRouteFailed"
        case .overlayLinkReady: "overlayLinkReady"
        case .overlayLinkFailed: "overlayLinkFailed"
        case .overlayLinkLost: "overlayLinkLost"
        case .overlayRouteInstalled: "overlayRouteInstalled"
        case .overlayRouteFailed: "overlayRouteFailed"
        case .overlayRouteMissing: "overlayRouteMissing"
        case .tunnelLinkUp: "tunnelLinkUp"
        case .tunnelLinkDown: "tunnelLinkDown"
        case .wanLinkUp: "wanLinkUp"
        case .wanLinkDown: "wanLinkDown"
        case .tunnelStarted: "tunnelStarted"
        case .tunnelStartFailed: "tunnelStartFailed"
        case .tunnelProcessExited(let status): "tunnelProcessExited(\(status))"
        case .tunnelControlConnected: "tunnelControlConnected"
        case .tunnelHeld: "tunnelHeld"
        case .credentialsRequested: "credentialsRequested"
        case .authenticationFailed: "authenticationFailed"
        case .tunnelConnected: "tunnelConnected"
        case .tunnelDisconnected(let why): "tunnelDisconnected(\(why))"
        case .tunnelFatal: "tunnelFatal"
        case .remoteRequested: "remoteRequested"
        case .tunnelCommandFailed(let command, _): "tunnelCommandFailed(\(command.label))"
        case .tunnelPeersConfigured: "tunnelPeersConfigured"
        case .tunnelPeersRead(let samples, _): samples.contains { $0.lastHandshake != nil } ? "tunnelPeersRead(handshake)" : "tunnelPeersRead(no handshake)"
        case .tunnelPeersReadFailed: "tunnelPeersReadFailed"
        case .tunnelOutputWatched: "tunnelOutputWatched"
        case .tunnelOutputEnded(let error): error == nil ? "tunnelOutputEnded" : "tunnelOutputEnded(configuration error)"
        case .probeSucceeded: "probeSucceeded"
        case .probeFailed: "probeFailed"
        case .timerFired(let timer): "timerFired(\(timer.rawValue))"
        case .shutdownRequested: "shutdownRequested"
        case .reloadRequested: "reloadRequested"
        case .configurationReloaded: "configurationReloaded"
        case .reloadRefused: "reloadRefused"
        case .portForwardsRead(.accepted(let forwards)): "portForwardsRead(\(forwards.count) forwards)"
        case .portForwardsRead(.refused): "portForwardsRead(refused)"
        case .forwardChangesApplied: "forwardChangesApplied"
        case .forwardChangesFailed: "forwardChangesFailed"
        }
    }
}

extension Action {
    /// A short name for logs and the documentation.
    public var label: String {
        switch self {
        case .applyFirewall(let policy): "applyFirewall(\(policy))"
        case .loadConfiguration: "loadConfiguration"
        case .openNameResolution: "openNameResolution"
        case .resolveNames(let names): "resolveNames(\(names.joined(separator: ", ")))"
        case .ensureLANAddress: "ensureLANAddress"
        case .ensurePolicyRouting: "ensurePolicyRouting"
        case .ensureTunnelRoute: "ensureTunnelRoute"
        case .ensureOverlayLink: "ensureOverlayLink"
        case .ensureOverlayRoute: "ensureOverlayRoute"
        case .startTunnel: "startTunnel"
        case .watchTunnelState: "watchTunnelState"
        case .releaseTunnel: "releaseTunnel"
        case .sendCredentials: "sendCredentials"
        case .reconnectTunnel: "reconnectTunnel"
        case .answerRemote(let answer): "answerRemote(\(answer.command))"
        case .stopTunnel: "stopTunnel"
        case .killTunnel: "killTunnel"
        case .readTunnelPeers: "readTunnelPeers"
        case .forgetTunnelProcess: "forgetTunnelProcess"
        case .probeTunnel: "probeTunnel"
        case .reloadConfiguration: "reloadConfiguration"
        case .verifyFirewall(let policy): "verifyFirewall(\(policy))"
        case .readPortForwardFile: "readPortForwardFile"
        case .applyForwardChanges(let diff): "applyForwardChanges(\(diff.label))"
        case .scheduleTimer(let timer, let after): "scheduleTimer(\(timer.rawValue), \(Self.label(after)))"
        case .cancelTimer(let timer): "cancelTimer(\(timer.rawValue))"
        case .exit(let code, let message): message == nil ? "exit(\(code))" : "exit(\(code), message)"
        }
    }

    /// "250 ms", "5 s".
    static func label(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
    }
}
