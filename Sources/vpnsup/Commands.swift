import Actions
import ArgumentParser
import FoundationEssentials
import Logging
import StateMachine
import Supervisor
import SystemSupport
import Watchers

struct Vpnsup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vpnsup",
        abstract: "Routes an isolated network through OpenVPN, with a kill switch that fails closed.",
        version: BuildInfo.line,
        subcommands: [Run.self, Status.self, Rules.self, Check.self, Health.self, MetricsCommand.self, HostRules.self, Join.self]
    )
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Supervise OpenVPN and route the LAN through it (container PID 1 or a service).",
        // One line per paragraph: ArgumentParser wraps the text to the terminal itself.
        discussion: """
        Each option may also come from the environment variable named in its help; the flag wins. \
        Arguments after `--` are passed to OpenVPN. Bad configuration exits with 78 (EX_CONFIG) \
        after the lockdown ruleset has been committed.
        """
    )

    @OptionGroup var settings: SettingsOptions
    @Argument(parsing: .postTerminator, help: "Extra OpenVPN arguments, after `--`.")
    var openvpnArguments: [String] = []

    mutating func run() async throws { try await execute() }

    func execute() async throws {
        let environment = ProcessInfo.processInfo.environment
        try await Self.execute(values: settings.values(environment: environment), openvpnArguments: openvpnArguments,
                               environment: environment)
    }

    /// `vpnsup run` given nothing but the environment (a container's entrypoint, the systemd
    /// unit): no flag to parse, so main.swift comes here without ArgumentParser, whose reflection
    /// over every command costs milliseconds before the first action.
    static func executeFromEnvironment() async throws {
        let environment = ProcessInfo.processInfo.environment
        try await execute(values: SettingsOptions.values(environment: environment), openvpnArguments: [],
                          environment: environment)
    }

    private static func execute(values: [String: String], openvpnArguments: [String],
                                environment: [String: String]) async throws {
        FileCreation.restrict()

        // Under systemd (stderr is the journal stream) structured entries go to the journal;
        // otherwise one readable line per entry on stderr.
        let level = environment["VPNSUP_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        let journal = JournalStream.stderrIsJournal(environment: environment)
        LoggingSystem.bootstrap { label in
            // Every entry one line, whatever the values it quotes hold.
            if journal {
                var handler = JournalLogHandler(label: label)
                handler.logLevel = level
                return OneLineLogHandler(handler)
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return OneLineLogHandler(handler)
        }
        let logger = Logger(label: "vpnsup")
        let signals = HeldUntilOpened<SignalEvent>()
        try SignalWatcher.start(receiver: .calling { signals.send($0) })
        let code = await LinuxSupervisor.run(RunSettings(values: values, openvpnArguments: openvpnArguments),
                                        logger: logger, signals: signals)
        Termination.exit(code)
    }
}

/// The settings `run` and `rules` share: each from a flag or else from its environment variable.
struct SettingsOptions: ParsableArguments {
    @Option(help: "OpenVPN or wg-quick configuration, absolute or relative to --config-dir. Env: CONFIG.")
    var config: String?
    @Option(help: "openvpn or wireguard; default: what CONFIG holds (a wg-quick file starts with [Interface] or [Peer]). Env: VPN_TYPE.")
    var vpnType: String?
    @Option(help: "WireGuard's link (and UAPI socket) name, unique on the machine. Env: TUNNEL_IF (default wg0).")
    var tunnelIf: String?
    @Option(help: "Directory for a relative --config. Env: CONFIG_DIR (default /config).")
    var configDir: String?
    @Option(help: "LAN gateway address with prefix length, e.g. 172.22.0.1/24. Env: IP_ADDR.")
    var ipAddr: String?
    @Option(help: "DNS server every LAN query is redirected to, through the tunnel. Env: DNS.")
    var dns: String?
    @Option(help: "Port forwards from the tunnel, [PUBLIC:]IP:PORT[/tcp|/udp], comma separated. Env: PORT_FWD.")
    var portFwd: String?
    @Option(help: "File of port forwards, one per line in PORT_FWD's syntax, # comments. Env: PORT_FWD_FILE.")
    var portFwdFile: String?
    @Option(help: "LAN interface. Env: LAN_IF (default eth1).")
    var lanIf: String?
    @Option(help: "WAN interface. Env: WAN_IF (default eth0).")
    var wanIf: String?
    @Option(help: "File with \"username\\npassword\\n\". Env: CREDENTIALS_FILE (default /run/secrets/openvpn_credentials).")
    var credentialsFile: String?
    @Option(help: "Directory for vpnsup's sockets. Env: RUNTIME_DIR (default /run/vpnsup).")
    var runtimeDir: String?
    @Option(help: "Group (name or id) that may read the status socket; default root only. Env: STATUS_GROUP.")
    var statusGroup: String?
    @Option(help: "Resolver the DNS probe asks through the tunnel. Env: PROBE_SERVER (default: DNS; neither: no probe).")
    var probeServer: String?
    @Option(help: "Name the DNS probe asks for; any answer counts. Env: PROBE_NAME (default example.com).")
    var probeName: String?
    @Option(help: "Seconds between DNS probes, 0 for none. Env: PROBE_INTERVAL (default 10).")
    var probeInterval: String?
    @Option(help: "Seconds a DNS probe waits for its answer. Env: PROBE_TIMEOUT (default 2).")
    var probeTimeout: String?
    @Option(help: "Failed probes in a row that make the tunnel Degraded and reconnect it. Env: PROBE_FAILURES (default 3).")
    var probeFailures: String?
    @Option(help: "Serve GET /metrics over HTTP at ADDR:PORT, the LAN gateway address or loopback. Env: METRICS_LISTEN (default: off).")
    var metricsListen: String?
    @Option(help: "Kubernetes gateway: the cluster's pod networks; set, LAN_IF is a vxlan overlay vpnsup creates over WAN_IF. Env: POD_CIDRS.")
    var podCidrs: String?
    @Option(help: "The overlay's VXLAN network identifier. Env: OVERLAY_VNI (default 30320).")
    var overlayVni: String?
    @Option(help: "The overlay's UDP port. Env: OVERLAY_PORT (default 4789).")
    var overlayPort: String?

    static let variables = ["CONFIG", "CONFIG_DIR", "IP_ADDR", "DNS", "PORT_FWD", "PORT_FWD_FILE", "LAN_IF", "WAN_IF", "CREDENTIALS_FILE",
                            "RUNTIME_DIR", "STATUS_GROUP", "PROBE_SERVER", "PROBE_NAME", "PROBE_INTERVAL", "PROBE_TIMEOUT",
                            "PROBE_FAILURES", "METRICS_LISTEN", "POD_CIDRS", "OVERLAY_VNI", "OVERLAY_PORT",
                            "VPN_TYPE", "TUNNEL_IF"]

    /// The configuration values, keyed by variable name; flags win over the environment.
    func values(environment: [String: String]) -> [String: String] {
        let flags: [(String, String?)] = [
            ("CONFIG", config), ("CONFIG_DIR", configDir), ("IP_ADDR", ipAddr), ("DNS", dns),
            ("PORT_FWD", portFwd), ("PORT_FWD_FILE", portFwdFile), ("LAN_IF", lanIf), ("WAN_IF", wanIf),
            ("CREDENTIALS_FILE", credentialsFile), ("RUNTIME_DIR", runtimeDir), ("STATUS_GROUP", statusGroup),
            ("PROBE_SERVER", probeServer), ("PROBE_NAME", probeName), ("PROBE_INTERVAL", probeInterval),
            ("PROBE_TIMEOUT", probeTimeout), ("PROBE_FAILURES", probeFailures), ("METRICS_LISTEN", metricsListen),
            ("POD_CIDRS", podCidrs), ("OVERLAY_VNI", overlayVni), ("OVERLAY_PORT", overlayPort),
            ("VPN_TYPE", vpnType), ("TUNNEL_IF", tunnelIf),
        ]
        return Self.values(environment: environment, flags: flags)
    }

    /// The values of `variables` in `environment`, overridden by the flags given.
    static func values(environment: [String: String], flags: [(String, String?)] = []) -> [String: String] {
        var values: [String: String] = [:]
        for name in variables { values[name] = environment[name] }
        for case let (name, value?) in flags { values[name] = value }
        return values
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the supervisor's state: for humans, or as JSON for scripts."
    )

    @Flag(help: "Print the status as JSON (a stable schema; see docs/operations.md).")
    var json = false
    @Option(help: "Directory of vpnsup's sockets. Env: RUNTIME_DIR (default /run/vpnsup).")
    var runtimeDir: String?

    mutating func run() async throws { try await execute() }

    func execute() async throws {
        let directory = runtimeDir ?? ProcessInfo.processInfo.environment["RUNTIME_DIR"] ?? Configuration.defaultRuntimeDirectory
        let bytes: [UInt8]
        do {
            bytes = try StatusChannel.fetch(from: directory + "/status.sock")
        } catch .untrustedServer(let path, let peer) {
            StandardError.writeLine("vpnsup status: \(ChannelError.untrustedServer(path: path, peer: peer))")
            throw ExitCode(69) // EX_UNAVAILABLE
        } catch {
            StandardError.writeLine("vpnsup status: no supervisor answers at \(directory)/status.sock (\(error))")
            throw ExitCode(69) // EX_UNAVAILABLE
        }
        if json {
            print(String(decoding: bytes, as: UTF8.self), terminator: "")
            return
        }
        if let join = JoinStatus.decode(bytes) {
            print(StatusReport.human(join), terminator: "")
            return
        }
        let snapshot = try JSONDecoder().decode(StatusSnapshot.self, from: Data(bytes))
        print(StatusReport.human(snapshot), terminator: "")
    }
}

/// `vpnsup health`: for Docker's HEALTHCHECK, Kubernetes' probes and scripts. Healthy means
/// TunnelUp for `vpnsup run`, Joined for `vpnsup join`, nothing less.
struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Exit 0 only while the tunnel is up (TunnelUp; vpnsup join: Joined); otherwise exit 1 and say why."
    )

    @Option(help: "Directory of vpnsup's sockets. Env: RUNTIME_DIR (default /run/vpnsup).")
    var runtimeDir: String?

    mutating func run() async throws { try await execute() }

    func execute() async throws {
        let directory = runtimeDir ?? ProcessInfo.processInfo.environment["RUNTIME_DIR"] ?? Configuration.defaultRuntimeDirectory
        let snapshot: StatusSnapshot
        let bytes: [UInt8]
        do {
            bytes = try StatusChannel.fetch(from: directory + "/status.sock")
        } catch .untrustedServer(let path, let peer) {
            // A forged status is never believed.
            print(oneLine("unhealthy: \(ChannelError.untrustedServer(path: path, peer: peer))"))
            throw ExitCode(1)
        } catch {
            print(oneLine("unhealthy: no supervisor answers at \(directory)/status.sock (\(error))"))
            throw ExitCode(1)
        }
        if let join = JoinStatus.decode(bytes) {
            print(oneLine(HealthVerdict.text(join)))
            if !join.healthy { throw ExitCode(1) }
            return
        }
        do {
            snapshot = try JSONDecoder().decode(StatusSnapshot.self, from: Data(bytes))
        } catch {
            print(oneLine("unhealthy: the answer from \(directory)/status.sock is not a status (\(error))"))
            throw ExitCode(1)
        }
        print(oneLine(HealthVerdict.text(snapshot)))
        if !HealthVerdict.healthy(snapshot) { throw ExitCode(1) }
    }
}

enum HealthVerdict {
    static func healthy(_ s: StatusSnapshot) -> Bool { s.state == State.tunnelUp.rawValue }

    static func text(_ s: StatusSnapshot) -> String {
        if healthy(s) {
            return "healthy: TunnelUp since \(s.since)" + (s.tunnelAddress.map { ", tunnel \($0)" } ?? "")
        }
        return "unhealthy: \(s.state) since \(s.since)" + (s.reason.map { ": \($0)" } ?? "")
    }

    static func text(_ s: JoinStatus) -> String {
        if s.healthy {
            return "healthy: Joined since \(s.since), overlay \(s.overlayAddress ?? "-") to the gateway \(s.gateway ?? "-")"
        }
        return "unhealthy: \(s.state) since \(s.since)" + (s.reason.map { ": \($0)" } ?? "")
    }
}

enum StatusReport {
    static func human(_ s: JoinStatus) -> String {
        var lines: [(String, String)] = [("state", "\(s.state) since \(s.since)")]
        if let reason = s.reason { lines.append(("reason", reason)) }
        lines.append(("kill switch", s.policy.map { "client \($0) ruleset committed" } ?? "not yet committed"))
        lines.append(("gateway", [s.gatewayName, s.gateway.map { "at \($0)" }].compactMap { $0 }.joined(separator: " ")))
        if let overlay = s.overlayInterface, let address = s.overlayAddress {
            lines.append(("overlay", "\(overlay) \(address) (pod \(s.podAddress ?? "-"))"))
        }
        if let dns = s.clusterDNS { lines.append(("cluster DNS", dns)) }
        if let counts = s.dns {
            lines.append(("DNS", "\(counts.relayed) relayed, \(counts.unanswered) unanswered, \(counts.dropped) dropped"))
        }
        let follow = s.lastFollow.map { ", last at \($0.at): \($0.from) -> \($0.to)" } ?? ""
        lines.append(("follows", "\(s.follows)\(follow)"))
        if let blocked = s.blocked {
            let total = blocked.values.reduce(0 as UInt64) { $0 + $1.packets }
            lines.append(("blocked", "\(total) packets"))
        }
        lines.append(("sidecar", "pid \(s.pid), started \(s.startedAt)"))
        var text = lines.map { "\($0.0.padding(12))\(oneLine($0.1))" }.joined(separator: "\n") + "\n"
        if !s.transitions.isEmpty {
            text += "transitions:\n"
            for t in s.transitions.suffix(8) {
                text += oneLine("  \(t.at)  \(t.from) -> \(t.to)  on \(t.event)" + (t.reason.map { " (\($0))" } ?? "")) + "\n"
            }
        }
        return text
    }

    static func human(_ s: StatusSnapshot) -> String {
        var lines: [(String, String)] = [("state", "\(s.state) since \(s.since)")]
        if let reason = s.reason { lines.append(("reason", reason)) }
        lines.append(("kill switch", s.policy.map { "\($0) ruleset committed" } ?? "not yet committed"))
        if let repairs = s.firewallRepairs {
            let last = s.lastRepair.map { ", last at \($0.at): \($0.change); \($0.policy) re-committed in \($0.milliseconds) ms" }
            lines.append(("repairs", repairs == 0 ? "none (no outside change to the table)" : "\(repairs)" + (last ?? "")))
        }
        if let lan = s.lanInterface, let gateway = s.gateway { lines.append(("LAN", "\(lan) \(gateway)")) }
        if let overlay = s.overlay { lines.append(("overlay", overlay)) }
        lines.append(("endpoints", s.endpoints.isEmpty ? "-" : s.endpoints.joined(separator: ", ")))
        if let wireGuard = s.wireGuard {
            lines += WireGuardReport.lines(wireGuard, pid: s.openvpnPID)
        } else {
            lines.append(("openvpn", [s.openvpnPID.map { "pid \($0)" } ?? "not running", s.openvpnState].compactMap { $0 }.joined(separator: ", ")))
            if let address = s.tunnelAddress { lines.append(("tunnel", "\(Configuration.tunnelInterface) \(address)" + (s.remote.map { " via \($0)" } ?? ""))) }
        }
        if s.bytesIn != nil || s.bytesOut != nil {
            lines.append(("traffic", "\(s.bytesIn ?? 0) bytes in, \(s.bytesOut ?? 0) bytes out"))
        }
        if let forwards = s.portForwards {
            // Thousands may come from PORT_FWD_FILE: the first few here, all of them in --json.
            let shown = forwards.count <= 8 ? forwards.joined(separator: ", ")
                : "\(forwards.count): " + forwards.prefix(4).joined(separator: ", ") + ", ... (status --json lists them all)"
            lines.append(("forwards", forwards.isEmpty ? "none" : shown))
        }
        if let file = s.portForwardFile {
            let last = s.lastForwardsChange.map { "; last read at \($0.at) \($0.accepted ? "accepted" : "refused"): \($0.message)" }
            let changes = s.forwardsChanges ?? 0
            lines.append(("fwd file", "\(file), \(changes) change\(changes == 1 ? "" : "s")" + (last ?? "")))
        }
        if let probe = s.probe {
            let last = probe.lastAt.map { ", last at \($0): \(probe.lastResult ?? "-")" } ?? ", not run yet"
            let failing = probe.consecutiveFailures > 0 ? " (\(probe.consecutiveFailures) failures in a row)" : ""
            lines.append(("probe", "\(probe.name) @\(probe.server) every \(Int(probe.intervalSeconds)) s\(last)\(failing)"))
        }
        if let reconnects = s.reconnects, reconnects > 0 {
            lines.append(("reconnects", "\(reconnects) (\(s.wireGuard == nil ? "probe failures" : "peers set again"))"))
        }
        if let reload = s.lastReload {
            lines.append(("reload", "\(s.reloads ?? 0) accepted; last at \(reload.at) \(reload.accepted ? "accepted" : "refused"): \(reload.message)"))
        }
        if let resolution = s.lastResolution {
            let found = resolution.names.map { name in
                resolution.addresses[name].map { "\(name) -> \($0.joined(separator: " "))" }
                    ?? "\(name) (\(resolution.failures?[name] ?? "no answer"))"
            }
            lines.append(("resolved", "\(found.joined(separator: ", ")) at \(resolution.at) in \(resolution.milliseconds) ms "
                + "(\(resolution.cause); \(s.resolutions ?? 1) in all)"))
        }
        if let blocked = s.blocked {
            let total = blocked.values.reduce((0 as UInt64, 0 as UInt64)) { ($0.0 + $1.packets, $0.1 + $1.bytes) }
            let parts = blocked.keys.sorted().map { "\($0) \(blocked[$0]!.packets)" }.joined(separator: ", ")
            lines.append(("blocked", "\(total.0) packets, \(total.1) bytes (\(parts))"))
        }
        lines.append(("supervisor", "pid \(s.pid), started \(s.startedAt)"))
        // Values may quote configuration and OpenVPN: one line each, whatever they hold.
        var text = lines.map { "\($0.0.padding(12))\(oneLine($0.1))" }.joined(separator: "\n") + "\n"
        if let findings = s.findings, !findings.isEmpty {
            text += "CONFIG lines not passed to OpenVPN as written:\n"
            for finding in findings {
                let done = finding.action == "translated" ? "translated to \(oneLine(finding.replacement ?? ""))" : finding.action
                text += "  \(finding.level) \(oneLine(finding.file)):\(finding.line): \(oneLine(finding.directive)): \(done): \(oneLine(finding.reason))\n"
            }
        }
        if let skipped = s.skippedRemotes, !skipped.isEmpty {
            text += "remotes not used:\n" + skipped.map { "  \(oneLine($0))\n" }.joined()
        }
        if !s.transitions.isEmpty {
            text += "transitions:\n"
            for t in s.transitions.suffix(8) {
                text += oneLine("  \(t.at)  \(t.from) -> \(t.to)  on \(t.event)" + (t.reason.map { " (\($0))" } ?? "")) + "\n"
            }
        }
        return text
    }
}

private extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}

/// A WireGuard tunnel's lines in `vpnsup status`.
enum WireGuardReport {
    static func lines(_ w: WireGuardStatus, pid: Int32?) -> [(String, String)] {
        let kernel = switch w.kernelHasWireGuard {
        case true?: "; the kernel has the wireguard link type (not used yet)"
        case false?: "; no kernel wireguard link type"
        case nil: ""
        }
        var lines: [(String, String)] = [
            ("wireguard", "\(w.interface), \(w.plane) plane (wireguard-go \(pid.map { "pid \($0)" } ?? "not running"))\(kernel)"),
            ("handshakes", w.evidence ?? "not watched"),
        ]
        let peers = w.peers ?? []
        for key in Set(w.configuredEndpoints.keys).union(peers.map(\.publicKey)).sorted() {
            let peer = peers.first { $0.publicKey == key }
            var text = "\(key.prefix(8))… \(peer?.endpoint ?? w.configuredEndpoints[key] ?? "no endpoint")"
            if let peer {
                text += peer.latestHandshakeAgeSeconds.map { ", handshake \(Int($0)) s ago" } ?? ", no handshake yet"
                text += ", \(peer.bytesIn) bytes in, \(peer.bytesOut) bytes out"
            }
            lines.append(("peer", text))
        }
        if let error = w.readError { lines.append(("peers", "not read: \(error)")) }
        return lines
    }
}
