/// Names the credentials the effects layer read, without holding them: the secret never enters
/// the machine, which only says which credentials are in use (`Machine.credentials`) and when to
/// send them (`sendCredentials`).
public struct CredentialsToken: Hashable, Sendable, CustomStringConvertible {
    public let generation: Int

    public init(generation: Int) { self.generation = generation }

    public var description: String { "credentials #\(generation)" }
}

/// What `loadConfiguration` read and validated: the environment's configuration, the tunnel
/// file's remotes (OpenVPN's `remote` lines, or the WireGuard peers' endpoints), and what
/// resolving their host names needs.
public struct LoadedConfiguration: Hashable, Sendable {
    public var configuration: Configuration
    /// The remotes `run` uses (the remote plan's, `OpenVPNConfigReview.remotes`).
    public var remotes: [Remote]
    /// resolv.conf's nameservers, read only when a remote names a host.
    public var nameservers: [IPv4Address]
    /// OpenVPN: the credentials and, read with them, the vetted OpenVPN text (both stay with the
    /// effects: the text may hold private keys). WireGuard: the parsed wg-quick file with its keys,
    /// which the effects hold as they hold credentials.
    public var credentials: CredentialsToken
    /// A wg-quick file, without its keys; nil for OpenVPN.
    public var wireGuard: WireGuardProfile?
    /// What the vetting did to the OpenVPN file's lines (logged once, shown by `vpnsup status`).
    public var findings: [OpenVPNConfigFinding]
    /// The file's connection profiles `run` does not use, with why.
    public var skippedRemotes: [RemotePlan.Entry]

    public init(configuration: Configuration, remotes: [Remote], nameservers: [IPv4Address] = [],
                credentials: CredentialsToken, wireGuard: WireGuardProfile? = nil,
                findings: [OpenVPNConfigFinding] = [], skippedRemotes: [RemotePlan.Entry] = []) {
        self.configuration = configuration
        self.remotes = remotes
        self.nameservers = nameservers
        self.credentials = credentials
        self.wireGuard = wireGuard
        self.findings = findings
        self.skippedRemotes = skippedRemotes
    }
}

/// What `reloadConfiguration` read again on SIGHUP (the environment cannot change).
public struct ReloadedConfiguration: Hashable, Sendable {
    public var remotes: [Remote]
    public var credentials: CredentialsToken
    /// The wg-quick file read again (nil: an OpenVPN file).
    public var wireGuard: WireGuardProfile?
    public var findings: [OpenVPNConfigFinding]
    public var skippedRemotes: [RemotePlan.Entry]

    public init(remotes: [Remote], credentials: CredentialsToken, wireGuard: WireGuardProfile? = nil,
                findings: [OpenVPNConfigFinding] = [], skippedRemotes: [RemotePlan.Entry] = []) {
        self.remotes = remotes
        self.credentials = credentials
        self.wireGuard = wireGuard
        self.findings = findings
        self.skippedRemotes = skippedRemotes
    }
}

/// The machine's verdict on a reload (`Machine.judge`).
public enum ReloadVerdict: Hashable, Sendable {
    /// The new remotes with the addresses pinned at start-up.
    case accepted(RemotePins)
    /// Why the reload is refused; the configuration in use stays.
    case refused(String)
}

/// What the tunnel backend needs to start the tunnel, as the machine decided it.
public struct TunnelPlan: Hashable, Sendable {
    public var configurationPath: String
    public var runtimeDirectory: String
    /// Some remote is not a pinned literal: the backend asks the supervisor before using each
    /// remote (OpenVPN: `--management-query-remote`), so a host name gets a pinned address and an
    /// unpinned remote is skipped. Only then: OpenVPN waits for each answer in one-second ticks.
    public var asksForRemotes: Bool
    /// The tunnel's link: OpenVPN's tun0, or WireGuard's TUNNEL_IF.
    public var tunnelInterface: String
    /// What a WireGuard tunnel is configured with; nil for OpenVPN.
    public var wireGuard: WireGuardPlan?
    /// The vetted OpenVPN text of the configuration in use, filled in by the effects from what
    /// they read (`credentials` names it), never by the machine: it may hold private keys.
    public var vettedText: String?

    public init(configurationPath: String, runtimeDirectory: String, asksForRemotes: Bool,
                tunnelInterface: String = Configuration.tunnelInterface, wireGuard: WireGuardPlan? = nil,
                vettedText: String? = nil) {
        self.configurationPath = configurationPath
        self.runtimeDirectory = runtimeDirectory
        self.asksForRemotes = asksForRemotes
        self.tunnelInterface = tunnelInterface
        self.wireGuard = wireGuard
        self.vettedText = vettedText
    }
}
