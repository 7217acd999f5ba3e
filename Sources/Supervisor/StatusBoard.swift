import Actions
import FoundationEssentials
import Glibc
import StateMachine
import Synchronization

/// What `vpnsup status` reports. The JSON form is a stable interface: fields are only ever added.
/// The supervisor's record (`SupervisorRecord`) derives it from the machine and its events; the
/// status socket adds what the kernel counts when it is asked.
public struct StatusSnapshot: Codable, Sendable, Equatable {
    public struct Transition: Codable, Sendable, Equatable {
        public var at: String
        public var from: String
        public var to: String
        public var event: String
        public var reason: String?
    }

    public var state = "Init"
    public var since: String
    public var reason: String?
    public var policy: String?
    public var pid: Int32
    public var startedAt: String
    public var lanInterface: String?
    public var gateway: String?
    public var endpoints: [String] = []
    /// Host names of `remote` lines -> the addresses pinned for them.
    public var resolvedRemotes: [String: [String]]?
    public var openvpnPID: Int32?
    public var openvpnState: String?
    public var tunnelAddress: String?
    public var remote: String?
    public var transitions: [Transition] = []
    /// What the kill switch's counted drops have blocked, per chain, read from the kernel when asked.
    public var blocked: [String: BlockedCount]?
    /// Outside changes to table inet vpnsup undone by committing the policy again. Optional only
    /// so that `status` still reads an older supervisor's JSON.
    public var firewallRepairs: Int? = 0
    public var lastRepair: Repair?
    /// Bytes through tun0 as the kernel counts them when the status is asked; absent without tun0.
    public var bytesIn: UInt64?
    public var bytesOut: UInt64?
    /// The port forwards in force (PORT_FWD's, then PORT_FWD_FILE's), e.g. `8080/tcp -> 172.22.0.10:80`.
    public var portForwards: [String]?
    /// The Kubernetes gateway's overlay (LAN_IF a vxlan link), e.g.
    /// `vxlan0 vni 30320 port 4789 over eth0, pods 10.244.0.0/16`; absent on an ordinary router.
    public var overlay: String?
    /// PORT_FWD_FILE, when there is one; how many new sets of forwards read from it since the
    /// start were taken into use, and the outcome of its last reading (a change of the file or
    /// SIGHUP): accepted (what changed and how it was applied) or refused (why; the forwards in
    /// force stayed).
    public var portForwardFile: String?
    public var forwardsChanges: Int?
    public var lastForwardsChange: Reload?
    /// The DNS probe: where it asks, and how the last one went.
    public var probe: Probe?
    /// `signal SIGUSR1` sent to OpenVPN because the probe kept failing (or tun0 vanished).
    public var reconnects: Int?
    /// SIGHUP reloads: how many were accepted, and the last one's outcome.
    public var reloads: Int?
    public var lastReload: Reload?
    /// A WireGuard tunnel: its link, plane, what the handshakes say, and its peers.
    public var wireGuard: WireGuardStatus?
    /// What vpnsup did to lines of CONFIG before OpenVPN got it (dropped, translated), in line order.
    public var findings: [Finding]?
    /// CONFIG's connection profiles `run` does not use, each with why.
    public var skippedRemotes: [String]?
    /// Resolutions of the remotes' host names (at start, and whenever every pinned address failed
    /// a full round), and the last one.
    public var resolutions: Int?
    public var lastResolution: Resolution?

    public init(since: String, pid: Int32, startedAt: String) {
        self.since = since
        self.pid = pid
        self.startedAt = startedAt
    }

    public struct Probe: Codable, Sendable, Equatable {
        public var server: String
        public var name: String
        public var intervalSeconds: Double
        public var lastAt: String?
        public var lastResult: String?
        public var consecutiveFailures: Int
    }

    public struct Reload: Codable, Sendable, Equatable {
        public var at: String
        public var accepted: Bool
        public var message: String

        public init(at: String, accepted: Bool, message: String) {
            self.at = at
            self.accepted = accepted
            self.message = message
        }
    }

    public struct Finding: Codable, Sendable, Equatable {
        public var file: String
        public var line: Int
        /// The line as written (a block by its tag).
        public var directive: String
        /// `dropped`, `translated` (to `replacement`) or `refused`.
        public var action: String
        public var replacement: String?
        /// `notice` for what vpnsup owns anyway, `warning` for what the file's author did not expect.
        public var level: String
        public var reason: String

        public init(file: String, line: Int, directive: String, action: String, replacement: String?, level: String, reason: String) {
            self.file = file
            self.line = line
            self.directive = directive
            self.action = action
            self.replacement = replacement
            self.level = level
            self.reason = reason
        }
    }

    public struct Resolution: Codable, Sendable, Equatable {
        public var at: String
        /// Why: `start-up`, or `every pinned address failed to connect`.
        public var cause: String
        public var names: [String]
        /// What each name resolved to this time.
        public var addresses: [String: [String]]
        public var failures: [String: String]?
        /// How long the resolver took.
        public var milliseconds: Double
        /// The endpoints pinned afterwards.
        public var endpoints: [String]
    }

    public struct Repair: Codable, Sendable, Equatable {
        public var at: String
        /// What changed and who changed it, as the nftables monitor reported it.
        public var change: String
        /// The policy committed again.
        public var policy: String
        /// How long the re-commit took (transaction and read-back).
        public var milliseconds: Double

        public init(at: String, change: String, policy: String, milliseconds: Double) {
            self.at = at
            self.change = change
            self.policy = policy
            self.milliseconds = milliseconds
        }
    }

    public static let keptTransitions = 20

    /// The machine went from `from` to `to` on `cause`.
    public mutating func recordTransition(from: State, to: State, cause: String, reason: String?, at: String) {
        state = to.rawValue
        since = at
        self.reason = reason
        transitions.append(.init(at: at, from: from.rawValue, to: to.rawValue, event: cause, reason: reason))
        if transitions.count > Self.keptTransitions { transitions.removeFirst() }
    }
}

/// A WireGuard tunnel in `vpnsup status`. The machine's part (link, evidence, the endpoint each
/// peer is configured with) comes with every snapshot; the peers' counters are read from
/// wireguard-go when the status is asked.
public struct WireGuardStatus: Codable, Sendable, Equatable {
    public struct Peer: Codable, Sendable, Equatable {
        public var publicKey: String
        /// Where wireguard-go sends the transport now.
        public var endpoint: String?
        /// The latest completed handshake; nil: none yet.
        public var latestHandshake: String?
        public var latestHandshakeAgeSeconds: Double?
        public var bytesIn: UInt64
        public var bytesOut: UInt64

        public init(publicKey: String, endpoint: String?, latestHandshake: String?, latestHandshakeAgeSeconds: Double?,
                    bytesIn: UInt64, bytesOut: UInt64) {
            self.publicKey = publicKey
            self.endpoint = endpoint
            self.latestHandshake = latestHandshake
            self.latestHandshakeAgeSeconds = latestHandshakeAgeSeconds
            self.bytesIn = bytesIn
            self.bytesOut = bytesOut
        }
    }

    /// TUNNEL_IF.
    public var interface: String
    /// The data plane carrying the tunnel: `userspace` (wireguard-go).
    public var plane: String
    /// Whether this kernel has the wireguard link type (probed at start), which vpnsup does not drive yet.
    public var kernelHasWireGuard: Bool?
    /// What the handshakes say: `connecting`, `up`, `handshake overdue: ...`, `stale: ...`.
    public var evidence: String?
    /// Public key -> the endpoint the peer is configured with (pinned).
    public var configuredEndpoints: [String: String]
    /// Read from wireguard-go at the request; absent while it does not run.
    public var peers: [Peer]?
    /// Why the peers could not be read.
    public var readError: String?

    public init(interface: String, plane: String, evidence: String?, configuredEndpoints: [String: String]) {
        self.interface = interface
        self.plane = plane
        self.evidence = evidence
        self.configuredEndpoints = configuredEndpoints
    }
}

public struct BlockedCount: Codable, Sendable, Equatable {
    public var packets: UInt64
    public var bytes: UInt64

    public init(packets: UInt64, bytes: UInt64) {
        self.packets = packets
        self.bytes = bytes
    }
}

/// The latest status: published by the interpreter, read by the status socket's thread.
public final class StatusBoard: Sendable {
    private let snapshot: Mutex<StatusSnapshot>

    public init(_ initial: StatusSnapshot) {
        snapshot = Mutex(initial)
    }

    public convenience init(startedAt: Date) {
        let now = StatusBoard.timestamp(startedAt)
        self.init(StatusSnapshot(since: now, pid: ProcessIdentity.current, startedAt: now))
    }

    public var current: StatusSnapshot { snapshot.withLock { $0 } }

    public func update(_ change: (inout StatusSnapshot) -> Void) {
        snapshot.withLock { change(&$0) }
    }

    /// The status with the kernel's counters of this moment (what `status` and the metrics show).
    public func current(blocked: [String: BlockedCount]?, traffic: LinkTraffic?) -> StatusSnapshot {
        var current = current
        current.blocked = blocked
        current.bytesIn = traffic?.received
        current.bytesOut = traffic?.sent
        return current
    }

    /// The JSON `vpnsup status --json` prints, with the kernel's counters of this moment.
    public func json(blocked: [String: BlockedCount]? = nil, traffic: LinkTraffic? = nil) -> [UInt8] {
        Self.json(current(blocked: blocked, traffic: traffic))
    }

    /// `snapshot` as `vpnsup status --json` prints it: keys sorted, one line.
    public static func json(_ snapshot: StatusSnapshot) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(snapshot)) ?? Data("{}".utf8)) + [UInt8(ascii: "\n")]
    }

    /// ISO 8601 in UTC to the millisecond, as `2026-11-18T11:06:40.123Z`. Written out over
    /// gmtime_r: the interpreter stamps every event and action it records, and Foundation's
    /// ISO8601FormatStyle (calendar components, a time zone, a format style built per call) was
    /// about 3% of the CPU of an idle supervisor with the DNS probe on (perf record).
    public static func timestamp(_ date: Date) -> String {
        // To the nearest microsecond first: a Date counts from 2001 in binary, so a date made
        // from x.999 s is x.99899... s after 1970, which is still the millisecond .999.
        let microseconds = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
        let (seconds, fraction) = (microseconds / 1000).quotientAndRemainder(dividingBy: 1000)
        var since1970 = time_t(fraction < 0 ? seconds - 1 : seconds)
        var parts = tm()
        guard gmtime_r(&since1970, &parts) != nil else { return "\(date)" }
        func digits(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let day = "\(digits(parts.tm_year + 1900, 4))-\(digits(parts.tm_mon + 1, 2))-\(digits(parts.tm_mday, 2))"
        let clock = "\(digits(parts.tm_hour, 2)):\(digits(parts.tm_min, 2)):\(digits(parts.tm_sec, 2))"
        return "\(day)T\(clock).\(digits(Int32((fraction + 1000) % 1000), 3))Z"
    }
}


