import Actions
import StateMachine
import Synchronization
import Watchers

/// The OpenVPN tunnel: spawned held, talked to over its management interface. vpnsup listens on
/// the management socket and OpenVPN connects to it (`--management-client`), so OpenVPN finds it
/// ready when it starts, and ends when vpnsup goes away.
public final class OpenVPNBackend: TunnelBackend {
    public let name = "OpenVPN"
    private let executable: String
    private let extraArguments: [String]
    private let channel = Mutex<ManagementChannel?>(nil)

    public init(executable: String = "openvpn", extraArguments: [String] = []) {
        self.executable = executable
        self.extraArguments = extraArguments
    }

    public static func managementSocket(in runtimeDirectory: String) -> String {
        runtimeDirectory + "/management.sock"
    }

    /// Listens on the management socket, serving nobody until an OpenVPN is started: a root
    /// process that connects first (and waits in the backlog for OpenVPN's respawn) is closed
    /// before it gets a byte, and never sees a `>PASSWORD:` exchange.
    public func open(runtimeDirectory: String, inbox: Inbox, scope: TaskScope) throws {
        let management = try ManagementChannel.listen(at: Self.managementSocket(in: runtimeDirectory), expecting: .nobody)
        channel.withLock { $0 = management }
        scope.spawn { await inbox.forward(management.events) { .tunnel(OpenVPNTranslator.translate($0)) } }
    }

    /// OpenVPN's command line for `plan`: vpnsup's options, then the user's.
    public func arguments(for plan: TunnelPlan) -> [String] {
        var arguments = [
            "--config", plan.configurationPath,
            "--dev", Configuration.tunnelInterface, "--dev-type", "tun",
            // vpnsup listens and OpenVPN connects: no start-up race, and OpenVPN exits when its supervisor goes.
            "--management", Self.managementSocket(in: plan.runtimeDirectory), "unix", "--management-client",
            "--management-hold", "--management-query-passwords", "--auth-user-pass", "--auth-nocache",
            // Only packets with this mark may leave by the WAN.
            "--mark", String(Configuration.transportMark),
            // Kernel data-channel offload bypasses the socket the mark is set on; keep it in user space.
            "--disable-dco",
        ]
        if plan.asksForRemotes {
            // OpenVPN asks before using each remote: a host name gets a pinned address, since its
            // own DNS would be dropped; an unpinned remote is skipped.
            arguments.append("--management-query-remote")
        }
        return arguments + extraArguments
    }

    /// Spawns OpenVPN, and has the management socket serve that process alone. While the spawn
    /// runs, a root child of vpnsup is accepted (OpenVPN may connect before `posix_spawn`
    /// returns its pid; vpnsup has no other child then); once the pid is known, nothing else.
    public func start(_ plan: TunnelPlan) throws -> Int32? {
        let management = channel.withLock { $0 }
        management?.expect(.anyChild)
        let pid: Int32
        do {
            pid = try Spawner.spawn(executable: executable, arguments: arguments(for: plan),
                                    environment: ["PATH": Spawner.defaultSearchPath])
        } catch {
            management?.expect(.nobody)
            throw error
        }
        management?.expect(.process(pid))
        return pid
    }

    public func forgetProcess() {
        channel.withLock { $0 }?.expect(.nobody)
    }

    public func send(_ command: TunnelCommand, credentials: Credentials?) throws {
        guard let management = channel.withLock({ $0 }) else { throw ManagementChannelError.notConnected }
        for line in try Self.lines(for: command, credentials: credentials) {
            try management.send(line)
        }
    }

    /// The management commands for `command`.
    static func lines(for command: TunnelCommand, credentials: Credentials?) throws -> [String] {
        switch command {
        case .watchState:
            return ["state on all"]
        case .release:
            return ["hold release"]
        case .reconnect:
            return ["signal SIGUSR1"]
        case .answerRemote(let answer):
            return [answer.command]
        case .sendCredentials:
            guard let credentials, let user = managementQuoted(credentials.username),
                  let password = managementQuoted(credentials.password) else {
                throw EffectError("credentials cannot be sent")
            }
            return ["username \"Auth\" \(user)", "password \"Auth\" \(password)"]
        }
    }

    public func stop(pid: Int32) { _ = Spawner.terminate(pid: pid) }

    public func kill(pid: Int32) { _ = Spawner.kill(pid: pid) }

    public func close() {
        channel.withLock { $0 }?.close()
    }
}
