import FoundationEssentials
import StateMachine
import Actions
import Synchronization

/// What `vpnsup status` reports. The JSON form is a stable interface: fields are only ever added.
struct StatusSnapshot: Codable, Sendable, Equatable {
    struct Transition: Codable, Sendable, Equatable {
        var at: String
        var from: String
        var to: String
        var event: String
        var reason: String?
    }

    var state = "Init"
    var since: String
    var reason: String?
    var policy: String?
    var pid: Int32
    var startedAt: String
    var lanInterface: String?
    var gateway: String?
    var endpoints: [String] = []
    /// Host names of `remote` lines -> the addresses pinned for them.
    var resolvedRemotes: [String: [String]]?
    var openvpnPID: Int32?
    var openvpnState: String?
    var tunnelAddress: String?
    var remote: String?
    var transitions: [Transition] = []
    /// What the kill switch's counted drops have blocked, per chain, read from the kernel when asked.
    var blocked: [String: BlockedCount]?
    /// Outside changes to table inet vpnsup undone by committing the policy again. Optional only
    /// so that `status` still reads an older supervisor's JSON.
    var firewallRepairs: Int? = 0
    var lastRepair: Repair?
    /// Bytes through tun0 as the kernel counts them when the status is asked; absent without tun0.
    var bytesIn: UInt64?
    var bytesOut: UInt64?
    /// PORT_FWD as applied, e.g. `8080/tcp -> 172.22.0.10:80`.
    var portForwards: [String]?
    /// The DNS probe: where it asks, and how the last one went.
    var probe: Probe?
    /// `signal SIGUSR1` sent to OpenVPN because the probe kept failing.
    var reconnects: Int?
    /// SIGHUP reloads: how many were accepted, and the last one's outcome.
    var reloads: Int?
    var lastReload: Reload?

    struct Probe: Codable, Sendable, Equatable {
        var server: String
        var name: String
        var intervalSeconds: Double
        var lastAt: String?
        var lastResult: String?
        var consecutiveFailures: Int
    }

    struct Reload: Codable, Sendable, Equatable {
        var at: String
        var accepted: Bool
        var message: String
    }

    struct Repair: Codable, Sendable, Equatable {
        var at: String
        /// What changed and who changed it, as the nftables monitor reported it.
        var change: String
        /// The policy committed again.
        var policy: String
        /// How long the re-commit took (transaction and read-back).
        var milliseconds: Double
    }
}

struct BlockedCount: Codable, Sendable, Equatable {
    var packets: UInt64
    var bytes: UInt64
}

/// The latest status, written by the driver and read by the status socket's thread.
final class StatusBoard: Sendable {
    static let keptTransitions = 20
    private let snapshot: Mutex<StatusSnapshot>

    init(startedAt: Date) {
        let now = StatusBoard.timestamp(startedAt)
        snapshot = Mutex(StatusSnapshot(since: now, pid: ProcessIdentity.current, startedAt: now))
    }

    func update(_ change: (inout StatusSnapshot) -> Void) {
        snapshot.withLock { change(&$0) }
    }

    func transition(from: State, to: State, cause: String, reason: String?) {
        let now = StatusBoard.timestamp(Date())
        update {
            $0.state = to.rawValue
            $0.since = now
            $0.reason = reason
            $0.transitions.append(.init(at: now, from: from.rawValue, to: to.rawValue, event: cause, reason: reason))
            if $0.transitions.count > StatusBoard.keptTransitions { $0.transitions.removeFirst() }
        }
    }

    func json(blocked: [String: BlockedCount]? = nil, traffic: LinkTraffic? = nil) -> [UInt8] {
        var current = snapshot.withLock { $0 }
        current.blocked = blocked
        current.bytesIn = traffic?.received
        current.bytesOut = traffic?.sent
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(current)) ?? Data("{}".utf8)) + [UInt8(ascii: "\n")]
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }
}


