import Actions
import FoundationEssentials
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
    /// PORT_FWD as applied, e.g. `8080/tcp -> 172.22.0.10:80`.
    public var portForwards: [String]?
    /// The Kubernetes gateway's overlay (LAN_IF a vxlan link), e.g.
    /// `vxlan0 vni 30320 port 4789 over eth0, pods 10.244.0.0/16`; absent on an ordinary router.
    public var overlay: String?
    /// The DNS probe: where it asks, and how the last one went.
    public var probe: Probe?
    /// `signal SIGUSR1` sent to OpenVPN because the probe kept failing (or tun0 vanished).
    public var reconnects: Int?
    /// SIGHUP reloads: how many were accepted, and the last one's outcome.
    public var reloads: Int?
    public var lastReload: Reload?

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

    public static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }
}


