import Actions
import StateMachine

/// Performs the machine's actions. The interpreter hands over one decision's actions at a time,
/// to be performed in order: the events returned report each outcome at once (`applyFirewall`
/// -> `firewallCommitted`); outcomes that take long (a timer, a DNS probe, a name resolution)
/// are posted to the inbox later. `machine` is the machine that decided the actions, as it was
/// then: what an action needs that it does not carry (the ruleset's layout, the credentials in
/// use, the tunnel's plan) is read from it, never decided here.
public protocol Effects: Sendable {
    func perform(_ action: Action, for machine: Machine) async -> [Event]
    /// All of `actions`, in order, with what reported each and how long it took. By default one
    /// `perform(_:for:)` after another; `LinuxEffects` runs them in one job on its thread.
    func perform(_ actions: [Action], for machine: Machine) async -> [PerformedAction<Event>]
}

extension Effects {
    public func perform(_ actions: [Action], for machine: Machine) async -> [PerformedAction<Event>] {
        await PerformedAction.each(actions) { await perform($0, for: machine) }
    }
}

/// What is particular to one kind of tunnel. The machine speaks of starting, releasing,
/// reconnecting and stopping "the tunnel" and of its reports; a backend maps that onto its
/// program and its control channel. The policies, and the order in which they are committed
/// around the tunnel, stay the machine's, whatever the backend.
///
/// OpenVPN: spawned held (`--management-hold`), released with `hold release` once the connecting
/// policy is committed, reports `>STATE:` lines. WireGuard (`WireGuardBackend`): spawns
/// wireguard-go, reports itself held once its UAPI socket appears, configures the link as its
/// `watchState` and the device and peers as its release; its handshakes are read as the machine
/// asks (`readTunnelPeers`), since WireGuard reports nothing by itself.
public protocol TunnelBackend: Sendable {
    /// The tunnel's name in the log ("OpenVPN").
    var name: String { get }
    /// Opens what the tunnel connects to when it starts (OpenVPN: the management socket, which
    /// vpnsup listens on); the channel's reports are posted to `inbox`, translated, from the
    /// channel's thread. Blocking.
    func open(runtimeDirectory: String, inbox: Inbox) throws
    /// Starts the tunnel; returns its process id, nil when it has none. Its control channel
    /// serves that process alone from then on. Blocking.
    func start(_ plan: TunnelPlan) throws -> Int32?
    /// The tunnel's process was reaped: its control channel serves nobody until the next start.
    func forgetProcess()
    /// Sends `command` over the control channel. Blocking.
    func send(_ command: TunnelCommand, credentials: Credentials?) throws
    /// The same, with the machine's plan for the tunnel as it is now (WireGuard configures the
    /// device from it); by default the plan is not needed.
    func send(_ command: TunnelCommand, plan: TunnelPlan, credentials: Credentials?) throws
    /// SIGTERM to the tunnel's process.
    func stop(pid: Int32)
    /// SIGKILL to the tunnel's process.
    func kill(pid: Int32)
    /// Closes the control channel (the tunnel then ends, if it still runs) and removes what
    /// `start` left in the runtime directory.
    func close()
    /// The backend reads the tunnel's output and reports its end (`tunnelOutputEnded`), with the
    /// configuration error it printed: the process's end is judged with it.
    var watchesOutput: Bool { get }
}

extension TunnelBackend {
    public var watchesOutput: Bool { false }
}

extension TunnelBackend {
    public func send(_ command: TunnelCommand, plan: TunnelPlan, credentials: Credentials?) throws {
        try send(command, credentials: credentials)
    }
}

/// What systemd is told (`Type=notify`); a fake in tests.
public protocol ServiceNotifying: Sendable {
    func ready()
    func status(_ text: String)
    func stopping()
    func watchdog()
}

extension ServiceNotifier: ServiceNotifying {}

/// An error of an effect, readable as is.
struct EffectError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
