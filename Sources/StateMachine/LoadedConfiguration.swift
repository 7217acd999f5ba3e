/// Names the credentials the effects layer read, without holding them: the secret never enters
/// the machine, which only says which credentials are in use (`Machine.credentials`) and when to
/// send them (`sendCredentials`).
public struct CredentialsToken: Hashable, Sendable, CustomStringConvertible {
    public let generation: Int

    public init(generation: Int) { self.generation = generation }

    public var description: String { "credentials #\(generation)" }
}

/// What `loadConfiguration` read and validated: the environment's configuration, the OpenVPN
/// file's remotes, and what resolving their host names needs.
public struct LoadedConfiguration: Hashable, Sendable {
    public var configuration: Configuration
    public var remotes: [Remote]
    /// resolv.conf's nameservers, read only when a remote names a host.
    public var nameservers: [IPv4Address]
    public var credentials: CredentialsToken

    public init(configuration: Configuration, remotes: [Remote], nameservers: [IPv4Address] = [],
                credentials: CredentialsToken) {
        self.configuration = configuration
        self.remotes = remotes
        self.nameservers = nameservers
        self.credentials = credentials
    }
}

/// What `reloadConfiguration` read again on SIGHUP (the environment cannot change).
public struct ReloadedConfiguration: Hashable, Sendable {
    public var remotes: [Remote]
    public var credentials: CredentialsToken

    public init(remotes: [Remote], credentials: CredentialsToken) {
        self.remotes = remotes
        self.credentials = credentials
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

    public init(configurationPath: String, runtimeDirectory: String, asksForRemotes: Bool) {
        self.configurationPath = configurationPath
        self.runtimeDirectory = runtimeDirectory
        self.asksForRemotes = asksForRemotes
    }
}
