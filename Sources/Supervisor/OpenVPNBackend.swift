import Actions
import Logging
import StateMachine
import Synchronization
import SystemSupport
import Watchers

/// The OpenVPN tunnel: spawned held, talked to over its management interface. vpnsup listens on
/// the management socket and OpenVPN connects to it (`--management-client`), so OpenVPN finds it
/// ready when it starts, and ends when vpnsup goes away. OpenVPN reads the vetted text of CONFIG
/// (RUNTIME_DIR/openvpn.conf, 0600), never the user's file, and runs nothing; its output comes
/// through a pipe into vpnsup's log, and what it says before it turns to the network decides
/// whether its end was a configuration error.
public final class OpenVPNBackend: TunnelBackend {
    public let name = "OpenVPN"
    private let executable: String
    private let extraArguments: [String]
    private let log: SupervisorLog?
    private let channel = Mutex<ManagementChannel?>(nil)
    /// Where the tunnel's reports go, and the runtime directory (once `open` ran).
    private let opened = Mutex<(inbox: Inbox, runtimeDirectory: String)?>(nil)

    /// `log` gets OpenVPN's output, line by line (without one, the lines go through the inbox).
    public init(executable: String = "openvpn", extraArguments: [String] = [], log: SupervisorLog? = nil) {
        self.executable = executable
        self.extraArguments = extraArguments
        self.log = log
    }

    public static func managementSocket(in runtimeDirectory: String) -> String {
        runtimeDirectory + "/management.sock"
    }

    /// The vetted configuration OpenVPN reads: written before each start, removed at exit.
    public static func vettedConfiguration(in runtimeDirectory: String) -> String {
        runtimeDirectory + "/openvpn.conf"
    }

    public var watchesOutput: Bool { true }

    /// Listens on the management socket, serving nobody until an OpenVPN is started: a root
    /// process that connects first (and waits in the backlog for OpenVPN's respawn) is closed
    /// before it gets a byte, and never sees a `>PASSWORD:` exchange.
    public func open(runtimeDirectory: String, inbox: Inbox) throws {
        // Translated on the channel's thread, and posted from there: no task hop per message.
        let management = try ManagementChannel.listen(at: Self.managementSocket(in: runtimeDirectory), expecting: .nobody,
                                                      receiver: .calling { inbox.post(.tunnel(OpenVPNTranslator.translate($0))) })
        channel.withLock { $0 = management }
        opened.withLock { $0 = (inbox, runtimeDirectory) }
    }

    /// OpenVPN's command line for `plan`: vpnsup's options, the user's (after `--`), and last the
    /// one no argument may undo: `--script-security 0` (OpenVPN runs no program at all).
    public func arguments(for plan: TunnelPlan) -> [String] {
        let configuration = plan.vettedText == nil ? plan.configurationPath : Self.vettedConfiguration(in: plan.runtimeDirectory)
        var arguments = [
            // Each line with its message class (error, warning...), for vpnsup's log; first, so
            // that it holds for the errors in the configuration too.
            "--machine-readable-output",
            // Relative paths in the file resolve from CONFIG's directory, as for the user's file.
            "--cd", ConfigurationFile.directory(of: plan.configurationPath), "--config", configuration,
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
        return arguments + extraArguments + ["--script-security", "0"]
    }

    /// Writes the vetted text (0600, whole or not at all), starts OpenVPN on it with its output in
    /// a pipe, and reads that output on a thread of its own until OpenVPN and everything that
    /// inherited the pipe are gone; then reports its end with the configuration error it printed.
    /// The management socket serves that process alone: while the spawn runs, a root child of
    /// vpnsup is accepted (OpenVPN may connect before `posix_spawn` returns its pid; vpnsup has no
    /// other child then); once the pid is known, nothing else.
    public func start(_ plan: TunnelPlan) throws -> Int32? {
        if let text = plan.vettedText {
            try PrivateFile.write(text, to: Self.vettedConfiguration(in: plan.runtimeDirectory))
        }
        let management = channel.withLock { $0 }
        management?.expect(.anyChild)
        let pid: Int32
        let output: ChildOutput
        do {
            (pid, output) = try Spawner.spawnReadingOutput(executable: executable, arguments: arguments(for: plan),
                                                           environment: ["PATH": Spawner.defaultSearchPath])
        } catch {
            management?.expect(.nobody)
            throw error
        }
        management?.expect(.process(pid))
        let inbox = opened.withLock { $0?.inbox }
        let vettedPath = Self.vettedConfiguration(in: plan.runtimeDirectory)
        let reader = OpenVPNOutputReader(log: log, inbox: inbox, pid: pid,
                                         vettedPath: plan.vettedText == nil ? nil : vettedPath,
                                         configurationPath: plan.configurationPath)
        do {
            try ReaderThread.start(name: "vpnsup-openvpn") { reader.read(output) }
        } catch {
            // No thread: the output is not read; its end is reported at once, so that OpenVPN's
            // exit is judged without it (and OpenVPN, writing into a closed pipe, is not blocked).
            output.close()
            inbox?.post(.tunnel(Translation(events: [.tunnelOutputEnded(configurationError: nil)],
                                            notes: [LogNote(.warning, "OpenVPN's output cannot be read: \(error)")])))
        }
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
        if let runtimeDirectory = opened.withLock({ $0?.runtimeDirectory }) {
            PrivateFile.remove(Self.vettedConfiguration(in: runtimeDirectory))
        }
    }
}

/// Reads OpenVPN's output: each line into vpnsup's log as `openvpn: <line>` at the level of its
/// message class, and through an `OpenVPNStartWatch`; at its end, `tunnelOutputEnded` with the
/// configuration error OpenVPN printed before it turned to the network, the vetted file's path
/// replaced by CONFIG's (the line numbers are the same).
struct OpenVPNOutputReader: Sendable {
    let log: SupervisorLog?
    let inbox: Inbox?
    let pid: Int32
    let vettedPath: String?
    let configurationPath: String

    func read(_ output: ChildOutput) {
        var watch = OpenVPNStartWatch()
        output.readLines { line in
            let parsed = OpenVPNLogLine(line)
            watch.take(parsed.message)
            let note = LogNote(Self.level(parsed.severity), "openvpn: " + userPaths(parsed.message), metadata: ["openvpn_pid": "\(pid)"])
            if let log { log.log(note) } else { inbox?.post(.tunnel(Translation(notes: [note]))) }
        }
        let error = watch.configurationError.map(userPaths)
        inbox?.post(.tunnel(Translation(events: [.tunnelOutputEnded(configurationError: error)])))
    }

    /// The message as it concerns the user's file: the vetted copy's path is CONFIG's.
    func userPaths(_ message: String) -> String {
        guard let vettedPath else { return message }
        return message.split(separator: vettedPath, omittingEmptySubsequences: false).joined(separator: configurationPath)
    }

    static func level(_ severity: OpenVPNLogLine.Severity) -> Logger.Level {
        switch severity {
        case .error: .error
        case .warning: .warning
        case .info: .info
        case .debug: .debug
        }
    }
}
