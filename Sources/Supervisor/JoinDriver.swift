import FoundationEssentials
import StateMachine
import Synchronization
import Watchers

/// Everything `vpnsup join`'s interpreter takes in.
public enum JoinInput: Sendable {
    case signal(SignalEvent)
    case netlink(NetlinkEvent)
    case nftables(NftablesEvent)
    /// An effect's outcome that came later (a timer, the gateway's name resolved).
    case event(JoinEvent)
}

public typealias JoinInbox = Mailbox<JoinInput>

/// Performs the join machine's actions (`LinuxJoinEffects`; a recording fake in tests). As with
/// `Effects`, what an action needs that it does not carry is read from `machine`'s plan.
public protocol JoinEffects: Sendable {
    func perform(_ action: JoinAction, for machine: JoinMachine) async -> [JoinEvent]
}

/// Turns what the watchers report into join events, given the machine (its plan names the
/// overlay's link, address, routes and gateway). Pure.
public enum JoinTranslator {
    public static func translate(_ input: JoinInput, for machine: JoinMachine) -> (events: [JoinEvent], notes: [LogNote]) {
        switch input {
        case .signal(.terminate(let number)):
            return ([.shutdownRequested], [LogNote(.notice, "signal \(number): shutting down; the kill switch stays", immediate: true)])
        case .signal(.reload):
            return ([], [LogNote(.notice, "SIGHUP: nothing to reload (vpnsup join reads its configuration at start)", immediate: true)])
        case .signal(.childExited):
            return ([], [])
        case .nftables(.changed(let transaction)):
            return ([.firewallTampered(transaction.description)], [LogNote(.notice, "\(transaction.description); re-committing")])
        case .nftables(.resync):
            return ([.firewallTampered("nftables notifications were lost")],
                    [LogNote(.notice, "nftables notifications were lost; re-committing table inet vpnsup")])
        case .netlink(let event):
            return (translate(event, for: machine), [])
        case .event(let event):
            return ([event], [])
        }
    }

    static func translate(_ event: NetlinkEvent, for machine: JoinMachine) -> [JoinEvent] {
        guard let plan = machine.plan else { return [] }
        let overlay = plan.configuration.overlayInterface
        let gateway = plan.gatewayOverlayAddress
        switch event {
        case .linkRemoved(let name, _) where name == overlay:
            return [.overlayLinkLost]
        case .link(let name, _, false) where name == overlay:
            return [.overlayLinkLost]
        case .address(let name, _, let address, false) where name == overlay && address == plan.overlayAddress:
            return [.overlayAddressMissing]
        case .route(let destination, let via, _, false)
            where (destination.prefixLength == 0 && via == gateway) || plan.configuration.clusterNetworks.contains(destination):
            return [.overlayRouteMissing]
        case .route(let destination, let via, _, true) where destination.prefixLength == 0 && via != gateway:
            // Another default route: ours may have been replaced (which the kernel does not report
            // as a removal); putting ours in place again is the same request either way.
            return [.overlayRouteMissing]
        case .neighbour(let name, _, let address, .failed) where name == overlay && address == gateway:
            return [.gatewayUnreachable]
        case .neighbour(let name, _, let address, .reachable) where name == overlay && address == gateway:
            return [.gatewayReachable]
        default:
            return []
        }
    }
}

/// What `vpnsup status` shows of `vpnsup join` (JSON: a stable interface, fields only added).
/// `role` tells it from the router's status, which `vpnsup status` and `vpnsup health` also read.
public struct JoinStatus: Codable, Sendable, Equatable {
    public struct Follow: Codable, Sendable, Equatable {
        public var at: String
        public var from: String
        public var to: String
    }

    public struct DNS: Codable, Sendable, Equatable {
        public var relayed: Int
        public var unanswered: Int
        public var dropped: Int
    }

    public var role = "join"
    public var state = JoinState.initial.rawValue
    public var since: String
    public var reason: String?
    /// What table inet vpnsup holds as far as vpnsup committed it.
    public var policy: String?
    public var pid: Int32
    public var startedAt: String
    public var gatewayName: String?
    /// The gateway's pod IP the overlay points at.
    public var gateway: String?
    public var podAddress: String?
    public var overlayAddress: String?
    public var overlayInterface: String?
    public var clusterDNS: String?
    /// Times the overlay was re-pointed at a moved gateway, and the last one.
    public var follows = 0
    public var lastFollow: Follow?
    /// The forwarder's queries, when the status is asked.
    public var dns: DNS?
    /// What the kill switch's counted drops have blocked, per chain, when the status is asked.
    public var blocked: [String: BlockedCount]?
    public var transitions: [StatusSnapshot.Transition] = []

    public init(since: String, pid: Int32, startedAt: String) {
        self.since = since
        self.pid = pid
        self.startedAt = startedAt
    }

    /// Whether `bytes` are the status of `vpnsup join` rather than of `vpnsup run`.
    public static func decode(_ bytes: [UInt8]) -> JoinStatus? {
        struct Role: Decodable { var role: String? }
        guard (try? JSONDecoder().decode(Role.self, from: Data(bytes)))?.role == "join" else { return nil }
        return try? JSONDecoder().decode(JoinStatus.self, from: Data(bytes))
    }

    public var healthy: Bool { state == JoinState.joined.rawValue }
}

/// The latest join status: published by the interpreter, read by the status socket's thread.
public final class JoinStatusBoard: Sendable {
    private let status: Mutex<JoinStatus>

    public init(_ initial: JoinStatus) { status = Mutex(initial) }

    public var current: JoinStatus { status.withLock { $0 } }

    func update(_ change: (inout JoinStatus) -> Void) { status.withLock { change(&$0) } }

    public func json(dns: JoinStatus.DNS? = nil, blocked: [String: BlockedCount]? = nil) -> [UInt8] {
        var current = current
        current.dns = dns
        current.blocked = blocked
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(current)) ?? Data("{}".utf8)) + [UInt8(ascii: "\n")]
    }
}

/// The join interpreter's account of itself: log lines and the status, projected from the
/// machine and what it handled. Pure (the time is passed in).
public struct JoinRecord: Sendable {
    public private(set) var status: JoinStatus

    public init(_ status: JoinStatus) { self.status = status }

    public mutating func handled(_ event: JoinEvent, before: JoinMachine, after: JoinMachine, actions: [JoinAction],
                                 at now: String) -> [LogNote] {
        var notes: [LogNote] = []
        if before.state != after.state {
            let reason = after.reason.map { " (\($0))" } ?? ""
            notes.append(LogNote(.notice, "\(before.state) -> \(after.state) on \(event.label)\(reason)",
                                 metadata: ["from": "\(before.state)", "to": "\(after.state)", "event": event.label],
                                 immediate: true))
            status.state = after.state.rawValue
            status.since = now
            status.transitions.append(.init(at: now, from: before.state.rawValue, to: after.state.rawValue,
                                            event: event.label, reason: after.reason))
            if status.transitions.count > StatusSnapshot.keptTransitions { status.transitions.removeFirst() }
        } else if after.reason != before.reason, let reason = after.reason {
            notes.append(LogNote(.warning, reason))
        }
        status.reason = after.reason
        for action in actions {
            if case .ensureOverlay(let address) = action, let old = before.gateway, old != address {
                status.follows += 1
                status.lastFollow = .init(at: now, from: old.description, to: address.description)
                notes.append(LogNote(.notice, "following the gateway: \(old) -> \(address) (re-pointing \(after.plan?.configuration.overlayInterface ?? "the overlay") in place)"))
            }
        }
        switch event {
        case .firewallCommitted(let policy):
            status.policy = policy.rawValue
        case .gatewayResolved(let addresses):
            notes.append(LogNote(.info, "\(after.plan?.configuration.gateway.description ?? "GATEWAY") resolved to "
                + (addresses.isEmpty ? "nothing" : addresses.map(\.description).joined(separator: " "))))
        default:
            break
        }
        if let plan = after.plan {
            status.gatewayName = plan.configuration.gateway.description
            status.podAddress = plan.setup.podAddress.description
            status.overlayAddress = plan.overlayAddress.description
            status.overlayInterface = plan.configuration.overlayInterface
            status.clusterDNS = plan.setup.clusterDNS.description
        }
        status.gateway = after.gateway?.description
        return notes
    }
}

/// The interpreter of `vpnsup join`: the loop is `Interpreter`'s (shared with `vpnsup run`'s
/// `Driver`); the record, the log and the status are its own.
public actor JoinDriver: Interpreter {
    var machine: JoinMachine
    private var record: JoinRecord
    private let effects: any JoinEffects
    private let inbox: JoinInbox
    private let log: SupervisorLog
    private let board: JoinStatusBoard
    public internal(set) var exitCode: Int32?

    public init(machine: JoinMachine, effects: any JoinEffects, inbox: JoinInbox, log: SupervisorLog, board: JoinStatusBoard) {
        self.machine = machine
        self.effects = effects
        self.inbox = inbox
        self.log = log
        self.board = board
        record = JoinRecord(board.current)
    }

    public var current: JoinMachine { machine }

    /// Runs until the machine exits (the watchers, the signals and the timers post into the inbox
    /// from threads of their own). The first thing the machine does is ask for the lockdown.
    public func run() async -> Int32 {
        await step(.event(.start))
        if exitCode == nil {
            for await input in inbox.inputs {
                await step(input)
                if exitCode != nil { break }
            }
        }
        return exitCode ?? ExitCode.unavailable
    }

    public func step(_ input: JoinInput) async {
        guard exitCode == nil else { return }
        let (events, notes) = JoinTranslator.translate(input, for: machine)
        notes.forEach(log.log)
        for event in events {
            await interpret(event)
            if exitCode != nil { return }
        }
    }

    // MARK: Interpreter

    func decided(_ event: JoinEvent, before: JoinMachine, actions: [JoinAction]) {
        let notes = record.handled(event, before: before, after: machine, actions: actions, at: now())
        if machine.isConfigured, !before.isConfigured { log.open() }
        notes.forEach(log.log)
        publish()
    }

    func perform(_ action: JoinAction) async -> [JoinEvent] {
        await effects.perform(action, for: machine)
    }

    func performed(_ action: JoinAction, results: [JoinEvent], elapsed: Duration) {}

    func exitCode(of action: JoinAction) -> Int32? {
        if case .exit(let code, _) = action { code } else { nil }
    }

    func exiting(with code: Int32) { publish() }

    func settled() { publish() }

    private func publish() {
        let status = record.status
        board.update { $0 = status }
    }

    private func now() -> String { StatusBoard.timestamp(Date()) }
}
