/// sysexits(3) codes `vpnsup run` ends with.
public enum ExitCode {
    public static let success: Int32 = 0
    /// EX_OSERR: the kill switch could not be armed.
    public static let unavailable: Int32 = 71
    /// EX_TEMPFAIL: another `vpnsup run` supervises this network namespace; try again once it ends.
    public static let alreadyRunning: Int32 = 75
    /// EX_CONFIG: bad configuration.
    public static let configuration: Int32 = 78
}

public struct Timings: Hashable, Sendable {
    public var respawnBase: Duration
    public var respawnCap: Duration
    /// Each backoff delay is shortened by a random fraction up to this (0...1), so that many
    /// routers restarting together do not retry in lock-step.
    public var jitter: Double
    public var retry: Duration
    public var stopGrace: Duration
    /// This many OpenVPN exits (or failed spawns) without the tunnel coming up, within
    /// `crashLoopWindow`, are a crash loop: Killswitched, then a retry after `crashLoopBackoff`
    /// (doubling per loop, up to `crashLoopCap`). nil: never.
    public var crashLoopExits: Int?
    public var crashLoopWindow: Duration
    public var crashLoopBackoff: Duration
    public var crashLoopCap: Duration
    /// How often the DNS probe asks through the tunnel. nil: as the configuration says
    /// (`ProbeSettings`); set, it overrides the configuration (tests).
    public var probeInterval: Duration?
    /// Consecutive probe failures that make TunnelUp Degraded and reconnect OpenVPN (used with
    /// `probeInterval`; otherwise the configuration's).
    public var probeFailures: Int
    /// How WireGuard's handshakes are judged and how often they are read.
    public var handshakes: WireGuardHandshakeTimings

    public init(respawnBase: Duration = .milliseconds(250), respawnCap: Duration = .seconds(30),
                jitter: Double = 0.2, retry: Duration = .seconds(5), stopGrace: Duration = .milliseconds(1500),
                crashLoopExits: Int? = 5, crashLoopWindow: Duration = .seconds(60),
                crashLoopBackoff: Duration = .seconds(10), crashLoopCap: Duration = .seconds(300),
                probeInterval: Duration? = nil, probeFailures: Int = 3,
                handshakes: WireGuardHandshakeTimings = WireGuardHandshakeTimings()) {
        self.respawnBase = respawnBase
        self.respawnCap = respawnCap
        self.jitter = min(max(jitter, 0), 1)
        self.retry = retry
        self.stopGrace = stopGrace
        self.crashLoopExits = crashLoopExits.map { max(1, $0) }
        self.crashLoopWindow = crashLoopWindow
        self.crashLoopBackoff = crashLoopBackoff
        self.crashLoopCap = crashLoopCap
        self.probeInterval = probeInterval
        self.probeFailures = max(1, probeFailures)
        self.handshakes = handshakes
    }
}

/// SplitMix64: a small deterministic generator, so that jitter keeps the machine pure and
/// repeatable (the driver seeds it).
struct JitterSource: Hashable, Sendable {
    var state: UInt64

    /// A fraction in [0, 1).
    mutating func next() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(UInt64(1) << 53)
    }
}
