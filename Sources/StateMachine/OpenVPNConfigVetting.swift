/// What vpnsup did with one line of the OpenVPN configuration, and why.
public struct OpenVPNConfigFinding: Hashable, Sendable, CustomStringConvertible {
    public enum Action: String, Hashable, Sendable {
        /// Left out: it runs a program or loads code, vpnsup owns it, or OpenVPN 2.6 no longer
        /// has it and its absence changes nothing on the wire.
        case dropped
        /// Replaced by `replacement`, which does exactly what it did.
        case translated
        /// The configuration cannot be used: `run` exits 78 naming this line.
        case refused
    }

    /// How loudly to say it: `notice` for what vpnsup does anyway (it owns the option), `warning`
    /// for a change the file's author did not expect.
    public enum Level: String, Hashable, Sendable { case notice, warning, error }

    public var line: Int
    /// The line as written (words re-quoted; a block by its tag alone).
    public var directive: String
    public var action: Action
    public var replacement: String?
    public var reason: String

    public init(line: Int, directive: String, action: Action, replacement: String? = nil, reason: String, level: Level? = nil) {
        self.line = line
        self.directive = directive
        self.action = action
        self.replacement = replacement
        self.reason = reason
        self.level = level ?? (action == .refused ? .error : .warning)
    }

    public var level: Level

    public var description: String {
        let subject = directive.isEmpty ? "" : "\(directive): "
        switch action {
        case .dropped: return "line \(line): \(subject)dropped: \(reason)"
        case .translated: return "line \(line): \(subject)translated to \(replacement ?? ""): \(reason)"
        case .refused: return "line \(line): \(subject)\(reason)"
        }
    }
}

/// The configuration OpenVPN gets: the user's file as OpenVPN reads it, less what vpnsup will not
/// pass on, written back line for line (a line's number is the same in both, so OpenVPN's own
/// messages name the user's line), with the findings that say what changed.
public struct VettedOpenVPNConfig: Hashable, Sendable {
    /// The configuration file's path, for messages.
    public let path: String
    /// What OpenVPN reads (`--config`): no option of `OpenVPNConfigVetting.neverPassed` at any
    /// depth, nothing vpnsup owns, inline blocks verbatim.
    public let text: String
    /// In line order; a refusal ends the vetting (later lines are not judged).
    public let findings: [OpenVPNConfigFinding]
    /// The connection profiles of `text`, as OpenVPN will build them.
    public let profiles: [ConnectionProfile]

    public var refusal: OpenVPNConfigFinding? { findings.first { $0.action == .refused } }

    /// The one line `run`, `rules` and `check` print before exiting 78, when refused:
    /// `CONFIG=/config/vpn.ovpn:12: dev tap: vpnsup routes at layer 3 ...`.
    public var error: String? { refusal.map(located) }

    /// A finding with the file's path: `CONFIG=/config/vpn.ovpn:4: up /etc/x: dropped: ...`.
    public func located(_ finding: OpenVPNConfigFinding) -> String {
        let subject = finding.directive.isEmpty ? "" : "\(finding.directive): "
        switch finding.action {
        case .refused: return "CONFIG=\(path):\(finding.line): \(subject)\(finding.reason)"
        default: return "CONFIG=\(path):\(finding.line): \(finding.description.drop(while: { $0 != ":" }).dropFirst(2))"
        }
    }
}

/// Decides, option by option, what of a user's OpenVPN configuration reaches OpenVPN. Pure: the
/// caller reads the file and hands OpenVPN `text` (see docs/configuration.md, "What vpnsup passes
/// to OpenVPN", for the table and the reasons).
public enum OpenVPNConfigVetting {
    /// Options that make OpenVPN 2.6 run a program or load code, from its option table
    /// (src/openvpn/options.c: every `set_user_script`, `OPT_P_SCRIPT`, `OPT_P_PLUGIN` option,
    /// `script-security`, and what loads shared objects or OpenSSL engines/providers). None ever
    /// reaches OpenVPN, at any place in the file (top level, `<connection>`, `setenv opt`).
    public static let runsPrograms: [String: String] = [
        "up": "runs a program", "down": "runs a program", "route-up": "runs a program",
        "route-pre-down": "runs a program", "ipchange": "runs a program", "tls-verify": "runs a program",
        "tls-crypt-v2-verify": "runs a program", "auth-user-pass-verify": "runs a program",
        "client-connect": "runs a program", "client-disconnect": "runs a program",
        "client-crresponse": "runs a program", "learn-address": "runs a program",
        "script-security": "lets OpenVPN run programs",
        "tls-export-cert": "writes peer certificates for a --tls-verify program",
        "lladdr": "runs ip to set a tap device's address",
        "iproute": "names the program OpenVPN runs as ip",
        "plugin": "loads a shared object into OpenVPN",
        "engine": "loads an OpenSSL engine (a shared object)",
        "pkcs11-providers": "loads a PKCS#11 module (a shared object)",
    ]

    /// OpenSSL's own providers: loaded from OpenSSL's module directory by name, never from a path.
    public static let builtInProviders: Set<String> = ["default", "base", "legacy", "fips", "null"]

    /// Every option name `text` never contains (for the fuzzer and tests): the ones above, and
    /// `providers` with anything but built-in names, and `config` (an include OpenVPN would read
    /// unvetted).
    public static var neverPassed: Set<String> { Set(runsPrograms.keys).union(["config"]) }

    private static let stillRuns = " (no configuration makes OpenVPN run or load anything under vpnsup)"

    /// Options vpnsup sets itself on OpenVPN's command line, or whose effect it owns.
    static let owned: [String: String] = [
        "auth-user-pass": "vpnsup sends CREDENTIALS_FILE's username and password over the management socket",
        "auth-nocache": "vpnsup sets it",
        "auth-retry": "vpnsup decides what follows a rejected password (it stops OpenVPN until SIGHUP)",
        "daemon": "vpnsup supervises OpenVPN in the foreground",
        "log": "vpnsup reads OpenVPN's output (its errors become vpnsup's)",
        "log-append": "vpnsup reads OpenVPN's output (its errors become vpnsup's)",
        "syslog": "vpnsup reads OpenVPN's output (its errors become vpnsup's)",
        "status": "`vpnsup status` reports the tunnel (and a status file is a root write to any path)",
        "writepid": "vpnsup knows OpenVPN's pid",
        "user": "OpenVPN stays root so that it can reopen tun0 when it reconnects (docs/security.md); `-- --user nobody --group nogroup --persist-tun` opts in",
        "group": "OpenVPN stays root so that it can reopen tun0 when it reconnects (docs/security.md); `-- --user nobody --group nogroup --persist-tun` opts in",
        "chroot": "OpenVPN must reach /dev/net/tun and the management socket when it reconnects",
        "persist-tun": "vpnsup's recovery has OpenVPN reopen tun0 when it reconnects (docs/security.md)",
        "mark": "vpnsup sets the mark the kill switch lets out by the WAN",
        "connect-retry-max": "OpenVPN keeps trying under vpnsup (an exit after N rounds would look like a crash)",
        "remap-usr1": "vpnsup reconnects OpenVPN with SIGUSR1 and needs it to stay a soft restart",
        "preresolve": "vpnsup resolves and pins host names; OpenVPN's own DNS is blocked",
        "dev-node": "vpnsup opens tun0 itself",
        "dev-type": "vpnsup's device is tun0, a tun device",
    ]

    /// Options OpenVPN 2.6 rejects whose absence changes nothing on the wire.
    static let obsolete: [String: String] = [
        "ncp-disable": "removed in OpenVPN 2.6: the data cipher is always negotiated (the server's cipher must be in data-ciphers)",
        "no-iv": "removed in OpenVPN 2.5, a no-op since 2.4",
        "prng": "removed in OpenVPN 2.6: OpenSSL's generator is used",
        "ifconfig-pool-linear": "removed in OpenVPN 2.5, and a server option",
        "client-cert-not-required": "removed in OpenVPN 2.5, and a server option",
        "compat-names": "removed in OpenVPN 2.5: it changed X.509 names as scripts saw them, and no script runs",
        "no-name-remapping": "removed in OpenVPN 2.5: it changed X.509 names as scripts saw them, and no script runs",
        "threads": "removed in OpenVPN 2.1",
        "nice-work": "removed in OpenVPN 2.1",
        "http-proxy-fallback": "removed in OpenVPN 2.4",
        "show-proxy-settings": "removed in OpenVPN 2.4, and Windows only",
        "auto-proxy": "removed in OpenVPN 2.4, and Windows only",
    ]

    /// Windows-only options, which OpenVPN on Linux rejects as unknown.
    static let windowsOnly: Set<String> = [
        "block-outside-dns", "register-dns", "ip-win32", "tap-sleep", "dhcp-renew", "dhcp-pre-release",
        "dhcp-release", "win-sys", "service", "pause-exit", "allow-nonadmin", "windows-driver", "show-net-up",
        "msg-channel", "dhcp-internal", "rdns-internal", "show-adapters", "show-net", "show-valid-subnets",
    ]

    /// Options that make OpenVPN do something else than connect, and exit.
    static let standalone: [String: String] = [
        "genkey": "generates a key and exits", "mktun": "creates a persistent device and exits",
        "rmtun": "deletes a persistent device and exits", "test-crypto": "tests its ciphers and exits",
        "show-ciphers": "lists ciphers and exits", "show-digests": "lists digests and exits",
        "show-engines": "lists engines and exits", "show-tls": "lists TLS ciphers and exits",
        "show-curves": "lists curves and exits", "show-groups": "lists groups and exits",
        "show-pkcs11-ids": "lists PKCS#11 ids and exits", "show-gateway": "shows the default gateway and exits",
        "help": "prints its help and exits", "version": "prints its version and exits",
    ]

    static let refusedOutright: [String: String] = [
        "config": "an include, which OpenVPN would read unvetted: put its lines in CONFIG",
        "inetd": "removed in OpenVPN 2.6, and OpenVPN under vpnsup is never started by inetd",
        "http-proxy": "the transport would go to a proxy, which the kill switch does not let out (it pins the remotes only)",
        "socks-proxy": "the transport would go to a proxy, which the kill switch does not let out (it pins the remotes only)",
        "management-external-key": "the private key would be held by a management client that signs with it; vpnsup is not one",
        "management-external-cert": "the certificate would come from a management client; vpnsup is not one",
        "pkcs11-id-management": "the PKCS#11 id would be chosen by a management client; vpnsup is not one",
        "cryptoapicert": "a Windows certificate store: name the certificate and key with cert/key",
        "server": "makes OpenVPN a server; vpnsup runs a client",
        "server-bridge": "makes OpenVPN a server; vpnsup runs a client",
        "server-ipv6": "makes OpenVPN a server; vpnsup runs a client",
        "mtu-dynamic": "removed (replaced by fragment, which works differently): write fragment",
    ]

    /// Vets `text`, the contents of the configuration file at `path` (for messages).
    public static func vet(_ text: String, path: String) -> VettedOpenVPNConfig {
        let options: [OpenVPNOption]
        switch OpenVPNConfigSyntax.parse(text) {
        case .success(let parsed): options = parsed
        case .failure(let error):
            let finding = OpenVPNConfigFinding(line: error.line, directive: "", action: .refused, reason: error.message)
            return VettedOpenVPNConfig(path: path, text: "", findings: [finding], profiles: [])
        }
        let context = Context(options: options)
        var keptOptions: [OpenVPNOption] = []
        var findings: [OpenVPNConfigFinding] = []
        for option in options {
            let verdict = judge(option, in: context, inConnection: false)
            findings += verdict.findings
            if findings.contains(where: { $0.action == .refused }) {
                return VettedOpenVPNConfig(path: path, text: "", findings: findings, profiles: [])
            }
            if let kept = verdict.kept { keptOptions.append(kept) }
        }
        // Physical lines: a last line without its LF counts too.
        let lineCount = text.utf8.reduce(into: 0) { if $1 == 0x0A { $0 += 1 } } + (text.utf8.last.map { $0 == 0x0A ? 0 : 1 } ?? 0)
        return VettedOpenVPNConfig(path: path, text: write(keptOptions, lines: lineCount), findings: findings,
                                   profiles: OpenVPNConfigFile.connectionProfiles(of: keptOptions))
    }

    /// What the whole file says, where one option's verdict depends on another.
    struct Context {
        /// `cipher`, for `keysize`; BF-CBC when unset, as OpenVPN 2.6 still defaults to in p2p.
        var cipher: String
        /// The device type `dev` and `dev-type` make, and the line that decides it.
        var deviceType: (type: String, line: Int)?

        init(options: [OpenVPNOption]) {
            cipher = options.last { $0.name == "cipher" && $0.arguments.count == 1 }?.arguments[0] ?? "BF-CBC"
            let dev = options.last { $0.name == "dev" && $0.arguments.count == 1 }
            let devType = options.last { $0.name == "dev-type" && $0.arguments.count == 1 }
            if let devType {
                deviceType = (devType.arguments[0], devType.line)
            } else if let dev {
                let name = dev.arguments[0]
                deviceType = (["tun", "tap", "null"].first { name.hasPrefix($0) } ?? "unknown", dev.line)
            }
        }
    }

    /// The verdict on one option: what reaches OpenVPN of it (nothing, or the option with its
    /// words, possibly rewritten), and what to say about it.
    typealias Verdict = (kept: OpenVPNOption?, findings: [OpenVPNConfigFinding])

    private static func drop(_ option: OpenVPNOption, _ reason: String, _ level: OpenVPNConfigFinding.Level = .warning) -> Verdict {
        (nil, [OpenVPNConfigFinding(line: option.line, directive: option.written, action: .dropped, reason: reason, level: level)])
    }

    private static func refuse(_ option: OpenVPNOption, _ reason: String) -> Verdict {
        (nil, [OpenVPNConfigFinding(line: option.line, directive: option.written, action: .refused, reason: reason)])
    }

    private static func translate(_ option: OpenVPNOption, to words: [String], _ reason: String) -> Verdict {
        var rewritten = option
        rewritten.words = words
        return (rewritten, [OpenVPNConfigFinding(line: option.line, directive: option.written, action: .translated,
                                                 replacement: rewritten.written, reason: reason)])
    }

    static func judge(_ option: OpenVPNOption, in context: Context, inConnection: Bool) -> Verdict {
        let name = option.name
        let arguments = option.arguments
        let keep: Verdict = (option, [])

        if ["<<<<<<<", "|||||||", "=======", ">>>>>>>"].contains(where: { name.hasPrefix($0) }) {
            return refuse(option, "a merge-conflict marker: resolve the conflict in the file")
        }
        if let reason = runsPrograms[name] { return drop(option, reason + stillRuns) }
        if let reason = refusedOutright[name] { return refuse(option, reason) }
        if let reason = standalone[name] { return refuse(option, "makes OpenVPN do something else than connect: it \(reason)") }
        if name.hasPrefix("management") { return drop(option, "vpnsup owns the management interface (RUNTIME_DIR/management.sock)", .notice) }
        if let reason = owned[name] {
            if name == "dev-type" {
                if arguments.first == "tap" { return refuse(option, "vpnsup routes at layer 3: OpenVPN's device is tun0, a tun (a tap device would bridge Ethernet frames)") }
                if arguments.first != "tun" { return refuse(option, "vpnsup's device is tun0, a tun device") }
            }
            return drop(option, reason, .notice)
        }
        if let reason = obsolete[name] { return drop(option, reason) }
        if windowsOnly.contains(name) {
            let extra = name == "block-outside-dns" ? " (vpnsup's kill switch sends every DNS query through the tunnel)" : ""
            return drop(option, "Windows only: OpenVPN on Linux rejects it" + extra)
        }

        switch name {
        case "dev":
            guard let device = arguments.first, arguments.count == 1 else { return keep }
            if context.deviceType?.type == "tap" || device.hasPrefix("tap") {
                return refuse(option, "vpnsup routes at layer 3: OpenVPN's device is tun0, a tun (a tap device would bridge Ethernet frames)")
            }
            if device == "null" { return refuse(option, "no device: vpnsup routes the LAN through tun0") }
            if device == "tun" { return drop(option, "vpnsup names the device tun0", .notice) }
            return drop(option, "the device is tun0 under vpnsup, not \(device) (the ruleset names it before it exists)")
        case "mode" where arguments == ["server"]:
            return refuse(option, "makes OpenVPN a server; vpnsup runs a client")
        case "proto", "proto-force":
            guard arguments.count == 1 else { return keep }
            guard let proto = OpenVPNProtocol(openVPNName: arguments[0]) else {
                return refuse(option, "'\(arguments[0])' is not a protocol of OpenVPN 2.6 (udp, tcp-client, udp4, tcp6-client...; names are lower case)")
            }
            if proto.role == .tcpServer { return refuse(option, "\(proto) listens for a client; vpnsup runs a client (write tcp-client)") }
            return keep
        case "remote":
            guard let parsed = OpenVPNConfigFile.remoteWords(arguments) else {
                if (1...3).contains(arguments.count) {
                    return refuse(option, "'\(arguments[2])' is not a protocol of OpenVPN 2.6 (udp, tcp-client, udp4, tcp6-client...; names are lower case)")
                }
                return refuse(option, "remote takes HOST [PORT [PROTOCOL]]")
            }
            if parsed.proto?.role == .tcpServer { return refuse(option, "tcp-server listens for a client; vpnsup runs a client (write tcp-client)") }
            return keep
        case "providers":
            let names = arguments.filter { builtInProviders.contains($0) }
            if names.count == arguments.count { return keep }
            let others = arguments.filter { !builtInProviders.contains($0) }
            let reason = "loads OpenSSL providers that are not OpenSSL's own (\(others.joined(separator: ", "))): code from a module file" + stillRuns
            if names.isEmpty { return drop(option, reason) }
            return translate(option, to: (option.isSetenvOpt ? ["setenv", "opt"] : []) + ["providers"] + names, reason)
        case "key-method":
            if arguments == ["2"] { return drop(option, "removed in OpenVPN 2.5: method 2 is the only one") }
            return refuse(option, "key method \(arguments.joined(separator: " ")) is not supported by OpenVPN 2.5 and later (only method 2, the default)")
        case "keysize":
            let variable = ["BF-", "CAST5-", "RC2-"].contains { context.cipher.uppercased().hasPrefix($0) }
            if variable, arguments != ["128"] {
                return refuse(option, "keysize \(arguments.joined(separator: " ")) with cipher \(context.cipher): OpenVPN 2.6 uses that cipher with 128-bit keys only, so the server would not understand it")
            }
            return drop(option, "removed in OpenVPN 2.6: it only changed the key length of BF, CAST5 and RC2 ciphers, which 2.6 uses at 128 bits")
        case "tls-remote":
            return tlsRemote(option)
        case "connection":
            guard let inside = option.connection else { return keep }
            if inConnection { return refuse(option, "a <connection> block inside a <connection> block") }
            var keptInside: [OpenVPNOption] = []
            var findings: [OpenVPNConfigFinding] = []
            for inner in inside {
                let verdict = judge(inner, in: context, inConnection: true)
                findings += verdict.findings
                if findings.contains(where: { $0.action == .refused }) { return (nil, findings) }
                if let kept = verdict.kept { keptInside.append(kept) }
            }
            guard keptInside.contains(where: { $0.name == "remote" }) else {
                return (nil, findings + refuse(option, "a <connection> block without a remote (OpenVPN refuses it)").findings)
            }
            var block = option
            block.connection = keptInside
            return (block, findings)
        default:
            return keep
        }
    }

    /// OpenVPN 2.3's `tls-remote NAME` (removed in 2.4): a NAME without `=` that does not start
    /// with `/` matched the start of the server certificate's common name, after 2.3 replaced
    /// every character but letters, digits and `_-.@/` in it with `_` (its --compat-names). For
    /// a NAME of letters, digits and `-.@/` that is exactly `verify-x509-name NAME name-prefix`;
    /// anything else (an `_`, which matched any such character; an old-style subject) is refused.
    static func tlsRemote(_ option: OpenVPNOption) -> Verdict {
        let arguments = option.arguments
        guard arguments.count == 1 else { return refuse(option, "tls-remote (removed in OpenVPN 2.4) takes one name") }
        let name = arguments[0]
        if name.isEmpty { return drop(option, "removed in OpenVPN 2.4, and an empty name checked nothing") }
        let exact = !name.hasPrefix("/") && name.utf8.allSatisfy {
            (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) || [0x2D, 0x2E, 0x40, 0x2F].contains($0)
        }
        guard exact else {
            return refuse(option, "tls-remote was removed in OpenVPN 2.4 and '\(name)' has no exact replacement: write verify-x509-name with the server certificate's subject or common name")
        }
        return translate(option, to: (option.isSetenvOpt ? ["setenv", "opt"] : []) + ["verify-x509-name", name, "name-prefix"],
                         "removed in OpenVPN 2.4; 2.3 matched the start of the server's common name, as name-prefix does")
    }

    /// The vetted text: each kept option on its own line (or lines, for a block) at the line it
    /// had, other lines empty, so that line numbers stay the user's.
    static func write(_ options: [OpenVPNOption], lines: Int) -> String {
        var output: [String] = Array(repeating: "\n", count: lines)
        func place(_ option: OpenVPNOption) {
            let index = option.line - 1
            guard index >= 0, index < output.count else { return }
            guard let body = option.body else {
                // OpenVPN drops `--` from a first word it reads, quoted or not: a name that starts
                // with `--` (read from `----up`) is written with two more, or it would come back
                // as another option (`up`). Found by FuzzOpenVPNConfig.
                var words = option.words
                if words[0].hasPrefix("--") { words[0] = "--" + words[0] }
                output[index] = words.map(OpenVPNConfigSyntax.quoted).joined(separator: " ") + "\n"
                return
            }
            let tag = option.words[0]
            output[index] = "<\(tag)>\n"
            if let inside = option.connection {
                for inner in inside { place(inner) }
            } else {
                var lineIndex = index + 1
                var current = ""
                for scalar in body.unicodeScalars {
                    current.unicodeScalars.append(scalar)
                    if scalar == "\n" {
                        if lineIndex < output.count { output[lineIndex] = current }
                        lineIndex += 1
                        current = ""
                    }
                }
                if !current.isEmpty, lineIndex < output.count { output[lineIndex] = current + "\n" }
            }
            let closing = index + option.lineCount - 1
            if closing < output.count { output[closing] = "</\(tag)>\n" }
        }
        for option in options { place(option) }
        return output.joined()
    }
}

