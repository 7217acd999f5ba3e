import Actions
import FoundationEssentials
import StateMachine
import Synchronization
import Watchers

/// The WireGuard tunnel on the userspace plane: Debian's wireguard-go, supervised as OpenVPN is
/// (spawned by vpnsup in the foreground, reaped by the signal watcher, respawned or given up on
/// by the machine), and configured over its UAPI socket only.
///
/// How the machine's tunnel vocabulary maps onto it:
/// - `start`: the socket name claimed, the socket watched (inotify), `wireguard-go -f NAME`
///   spawned. When the socket appears (the link exists by then) a thread of its own reports
///   `tunnelControlConnected` and `tunnelHeld`: wireguard-go waits, unconfigured, for its release.
/// - `watchState`: the link's MTU, its IPv4 addresses, IFF_UP (no key, no peer: nothing leaves).
/// - `release`: the whole device over UAPI (private key, fwmark, `replace_peers` and every pinned
///   peer), which the machine asks for only under a committed policy that lets the transport
///   out; then `tunnelPeersConfigured(at:)` with the wall-clock time, for the handshake monitor.
/// - `reconnect`: the link up again and the peers set anew (a new handshake, the endpoints the
///   machine now wants); `tunnelPeersConfigured` again.
/// - stop and kill: SIGTERM (wireguard-go removes its link and socket) and SIGKILL.
///
/// The private key is only ever in this process's memory and on the UAPI socket, whose server
/// is checked to be the wireguard-go spawned here (SO_PEERCRED): never in an argument, the
/// environment or a file.
public final class WireGuardBackend: TunnelBackend {
    public let name = "wireguard-go"
    /// How long wireguard-go may take to serve its socket (it takes 4 to 22 ms here).
    static let socketDeadline: Duration = .seconds(10)

    private let executable: String
    private let logLevel: String

    private struct Run {
        var interface: String
        var pid: Int32
        /// Ends the wait for the socket early (the process was stopped, or a new one started).
        var wakeup: WakeupEvent
    }

    private struct State {
        var inbox: Inbox?
        /// The parsed files (keys included) by token; the machine says which is in use.
        var files: [CredentialsToken: WireGuardConfiguration] = [:]
        var filesRead = 0
        /// Each start's number: a wait for an older start's socket reports nothing.
        var generation: UInt64 = 0
        var run: Run?
    }

    private let state = Mutex(State())

    public init(executable: String = WireGuardGo.defaultExecutable, logLevel: String = "error") {
        self.executable = executable
        self.logLevel = logLevel
    }

    // MARK: The files

    /// Keeps a parsed wg-quick file under a new token. Only `inUse` and the new one are kept: the
    /// keys of a file nobody will use again are dropped.
    func keep(_ file: WireGuardConfiguration, inUse: CredentialsToken?) -> CredentialsToken {
        state.withLock { state in
            state.filesRead += 1
            let token = CredentialsToken(generation: state.filesRead)
            state.files = state.files.filter { $0.key == inUse }
            state.files[token] = file
            return token
        }
    }

    func file(_ token: CredentialsToken) -> WireGuardConfiguration? {
        state.withLock { $0.files[token] }
    }

    // MARK: TunnelBackend

    public func open(runtimeDirectory: String, inbox: Inbox) throws {
        state.withLock { $0.inbox = inbox }
    }

    public func start(_ plan: TunnelPlan) throws -> Int32? {
        let interface = plan.tunnelInterface
        try WireGuardGo.claimSocket(interface: interface)
        // Armed before the spawn, so a socket made at once is not missed.
        let watcher = try WireGuardSocketWatcher(interface: interface)
        let wakeup = try WakeupEvent()
        let pid = try WireGuardGo.spawn(interface: interface, executable: executable, logLevel: logLevel)
        let (generation, previous) = state.withLock { state in
            state.generation += 1
            let previous = state.run?.wakeup
            state.run = Run(interface: interface, pid: pid, wakeup: wakeup)
            return (state.generation, previous)
        }
        previous?.signal()
        let started = ContinuousClock.now
        let wait: @Sendable () -> Void = { [self] in
            let outcome: Result<WireGuardSocketWatcher.Outcome, any Error> = Result {
                try watcher.wait(until: started + Self.socketDeadline, wakeup: wakeup)
            }
            let inbox = state.withLock { $0.generation == generation ? $0.inbox : nil }
            guard let inbox else { return }
            let elapsed = SupervisorRecord.milliseconds(ContinuousClock.now - started)
            switch outcome {
            case .success(.appeared):
                inbox.post(.tunnel(Translation(
                    events: [.tunnelControlConnected, .tunnelHeld],
                    notes: [LogNote(.info, "wireguard-go (pid \(pid)) serves \(watcher.socketPath) after \(elapsed) ms")],
                    report: TunnelReport(state: "unconfigured", connected: false))))
            case .success(.woken):
                return
            case .success(.timedOut):
                inbox.post(.tunnel(Translation(events: [.tunnelCommandFailed(
                    .watchState, "wireguard-go (pid \(pid)) made no socket \(watcher.socketPath) within \(elapsed) ms")])))
            case .failure(let error):
                inbox.post(.tunnel(Translation(events: [.tunnelCommandFailed(
                    .watchState, "waiting for \(watcher.socketPath): \(error)")])))
            }
        }
        do {
            try ReaderThread.start(name: "vpnsup-wg-sock", wait)
        } catch {
            _ = Spawner.kill(pid: pid)
            throw error
        }
        return pid
    }

    public func send(_ command: TunnelCommand, credentials: Credentials?) throws {
        throw EffectError("WireGuard's \(command.label) needs the tunnel's plan")
    }

    public func send(_ command: TunnelCommand, plan: TunnelPlan, credentials: Credentials?) throws {
        guard let wireGuard = plan.wireGuard, let file = file(wireGuard.file) else {
            throw EffectError("no WireGuard configuration for \(command.label)")
        }
        guard let run = state.withLock({ $0.run }), run.interface == plan.tunnelInterface else {
            throw EffectError("wireguard-go is not running")
        }
        let client = WireGuardUAPIClient(interface: run.interface, expectedPID: run.pid)
        switch command {
        case .watchState:
            try configureLink(run.interface, file)
        case .release:
            _ = try client.send(.device(file, endpoints: wireGuard.endpoints, fwmark: wireGuard.fwmark))
            reportConfigured(wireGuard, run: run, what: "configured the device and \(wireGuard.endpoints.count) peer(s)")
        case .reconnect:
            try configureLink(run.interface, file)
            _ = try client.send(.peers(file, endpoints: wireGuard.endpoints))
            reportConfigured(wireGuard, run: run, what: "set the \(wireGuard.endpoints.count) peer(s) again")
        case .sendCredentials, .answerRemote:
            throw EffectError("WireGuard has no \(command.label)")
        }
    }

    public func stop(pid: Int32) {
        wake(pid)
        _ = Spawner.terminate(pid: pid)
    }

    public func kill(pid: Int32) {
        wake(pid)
        _ = Spawner.kill(pid: pid)
    }

    /// wireguard-go was reaped: no request goes to the UAPI socket until the next start (by then
    /// its pid may be another process's).
    public func forgetProcess() {
        let wakeup = state.withLock { state in
            defer { state.run = nil }
            return state.run?.wakeup
        }
        wakeup?.signal()
    }

    public func close() {
        let wakeup = state.withLock { state in
            state.generation += 1
            return state.run?.wakeup
        }
        wakeup?.signal()
    }

    // MARK: -

    /// MTU (the file's, else wireguard-go's 1420), the IPv4 addresses, IFF_UP.
    private func configureLink(_ interface: String, _ file: WireGuardConfiguration) throws {
        if let mtu = file.mtu { try WireGuardLink.setMTU(mtu, on: interface) }
        let addresses = AddressConfigurator()
        for address in file.ipv4Addresses { try addresses.ensureAddress(address, on: interface) }
        try addresses.setLinkUp(interface)
    }

    private func reportConfigured(_ plan: WireGuardPlan, run: Run, what: String) {
        let at = WallClock.now
        let endpoints = plan.endpoints.values.map(\.description).sorted().joined(separator: ", ")
        state.withLock { $0.inbox }?.post(.tunnel(Translation(
            events: [.tunnelPeersConfigured(at: at)],
            notes: [LogNote(.info, "wireguard-go (pid \(run.pid)): \(what): \(endpoints)")],
            report: TunnelReport(state: "configured", connected: false))))
    }

    private func wake(_ pid: Int32) {
        state.withLock { state in state.run?.pid == pid ? state.run?.wakeup : nil }?.signal()
    }
}

/// Wall-clock time since the Unix epoch: the clock WireGuard stamps handshakes with.
enum WallClock {
    static var now: Duration {
        let seconds = Date().timeIntervalSince1970
        return .nanoseconds(Int64(seconds * 1_000_000_000))
    }
}
