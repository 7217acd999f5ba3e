/// What the handshakes say about a WireGuard tunnel. WireGuard sends no events: vpnsup reads each
/// peer's latest handshake time and byte counters (UAPI `get=1`, or genetlink on the kernel
/// plane) as often as the current evidence needs, no more.
public enum WireGuardEvidence: Hashable, Sendable, CustomStringConvertible {
    /// Configured, no handshake yet with every peer.
    case connecting
    /// Still no handshake `connectTimeout` after the peers were configured: a wrong key, a server
    /// that is down or unreachable. WireGuard keeps retrying (every 5 s while it has something to
    /// send); the supervisor may re-resolve and re-set the peers.
    case handshakeOverdue(String)
    /// Every peer completed a handshake less than `rejectAfter` ago.
    case up
    /// A peer's latest handshake is older than WireGuard's reject-after time while traffic is
    /// being sent to it (so a new one was due and did not happen), or the device stopped
    /// answering: the tunnel carries nothing.
    case stale(String)

    public var description: String {
        switch self {
        case .connecting: "connecting"
        case .handshakeOverdue(let why): "handshake overdue: \(why)"
        case .up: "up"
        case .stale(let why): "stale: \(why)"
        }
    }
}

/// WireGuard's own clocks (the protocol's constants) and how often vpnsup looks.
public struct WireGuardHandshakeTimings: Hashable, Sendable {
    /// REJECT_AFTER_TIME: a session's keys are refused this long after its handshake; a
    /// handshake is due every REKEY_AFTER_TIME (120 s) while traffic flows.
    public var rejectAfter: Duration
    /// The first look after the peers are configured, doubled per look up to `connectingCap`.
    public var connectingFirstLook: Duration
    public var connectingCap: Duration
    /// No handshake this long after configuration: `handshakeOverdue`.
    public var connectTimeout: Duration
    /// While overdue or stale: WireGuard retries a handshake every REKEY_TIMEOUT (5 s).
    public var retryLook: Duration
    /// A handshake found older than `rejectAfter` while sending is looked at once more after
    /// this before it counts as stale: a handshake WireGuard started for the very packets that
    /// were just counted gets its round trips.
    public var staleGrace: Duration
    /// While up: never look more often than this, nor less often than `rejectAfter`.
    public var upMinimum: Duration
    /// While up with an old handshake and nothing sent (an idle tunnel without keepalive): how
    /// often to check whether traffic started.
    public var idleLook: Duration
    /// Consecutive failed reads that make the evidence `stale`.
    public var readFailures: Int

    public init(rejectAfter: Duration = .seconds(180), connectingFirstLook: Duration = .milliseconds(100),
                connectingCap: Duration = .seconds(1), connectTimeout: Duration = .seconds(20),
                retryLook: Duration = .seconds(5), staleGrace: Duration = .seconds(10),
                upMinimum: Duration = .seconds(10), idleLook: Duration = .seconds(30), readFailures: Int = 3) {
        self.rejectAfter = rejectAfter
        self.connectingFirstLook = connectingFirstLook
        self.connectingCap = connectingCap
        self.connectTimeout = connectTimeout
        self.retryLook = retryLook
        self.staleGrace = staleGrace
        self.upMinimum = upMinimum
        self.idleLook = idleLook
        self.readFailures = max(1, readFailures)
    }
}

/// One peer's counters at one look.
public struct WireGuardPeerSample: Hashable, Sendable {
    public var publicKey: WireGuardKey
    /// Wall-clock time since the Unix epoch (what WireGuard reports); nil: no handshake yet.
    public var lastHandshake: Duration?
    public var sentBytes: UInt64

    public init(publicKey: WireGuardKey, lastHandshake: Duration?, sentBytes: UInt64) {
        self.publicKey = publicKey
        self.lastHandshake = lastHandshake
        self.sentBytes = sentBytes
    }

    public init(_ status: WireGuardPeerStatus) {
        self.init(publicKey: status.publicKey, lastHandshake: status.lastHandshake, sentBytes: status.sentBytes)
    }
}

public enum WireGuardEvidenceEvent: Hashable, Sendable {
    /// The peers were (re)configured with `replace_peers` (so none has a handshake yet), at `at`.
    case peersConfigured([WireGuardKey], at: Duration)
    /// The look scheduled by `scheduleLook` is due.
    case lookDue
    /// The answer to `readPeers`, with the wall-clock time it was read at.
    case sampled([WireGuardPeerSample], at: Duration)
    /// `readPeers` failed (why).
    case readFailed(String)
    /// The tunnel was torn down: stop looking.
    case stopped
}

public enum WireGuardEvidenceAction: Hashable, Sendable {
    /// Read every peer now; answer with `sampled` or `readFailed`.
    case readPeers
    /// Send `lookDue` after this long (replacing any look already scheduled).
    case scheduleLook(after: Duration)
    case cancelLook
    /// The evidence changed (reported once per change).
    case report(WireGuardEvidence)
}

/// Turns handshake times into tunnel evidence, and decides when to look next: fast while
/// connecting (100 ms doubling to 1 s), every 5 s while overdue or stale, and while up only when
/// the evidence could next change — when the latest handshake would pass `rejectAfter`, at
/// least 10 s apart — which, with WireGuard rekeying every 120 s, is about one look every
/// 2 minutes. Pure: time comes in with the events; all times are wall-clock (CLOCK_REALTIME), the
/// clock WireGuard stamps handshakes with. A clock step makes one judgement early or late; it
/// cannot make the kill switch open (the evidence only chooses between states of the tunnel).
public struct WireGuardHandshakeMonitor: Hashable, Sendable {
    enum Phase: Hashable, Sendable {
        case idle
        case connecting(since: Duration, nextInterval: Duration, overdue: Bool)
        case up(suspectSince: Duration?)
        case stale
    }

    public let timings: WireGuardHandshakeTimings
    private(set) var phase = Phase.idle
    private var peers: [WireGuardKey] = []
    private var previousSent: [WireGuardKey: UInt64] = [:]
    private var failures = 0
    public private(set) var evidence: WireGuardEvidence?

    public init(timings: WireGuardHandshakeTimings = WireGuardHandshakeTimings()) {
        self.timings = timings
    }

    public mutating func handle(_ event: WireGuardEvidenceEvent) -> [WireGuardEvidenceAction] {
        switch event {
        case .peersConfigured(let keys, let now):
            peers = keys
            previousSent = [:]
            failures = 0
            phase = .connecting(since: now, nextInterval: timings.connectingFirstLook, overdue: false)
            return report(.connecting) + [.scheduleLook(after: timings.connectingFirstLook)]
        case .lookDue:
            return phase == .idle ? [] : [.readPeers]
        case .readFailed(let why):
            guard phase != .idle else { return [] }
            failures += 1
            var actions: [WireGuardEvidenceAction] = []
            if failures >= timings.readFailures {
                phase = .stale
                actions += report(.stale("the device does not answer (\(why))"))
            }
            return actions + [.scheduleLook(after: max(timings.connectingCap, min(timings.retryLook, interval)))]
        case .sampled(let samples, let now):
            guard phase != .idle else { return [] }
            failures = 0
            defer { for sample in samples { previousSent[sample.publicKey] = sample.sentBytes } }
            return judge(samples, now: now)
        case .stopped:
            phase = .idle
            peers = []
            previousSent = [:]
            evidence = nil
            return [.cancelLook]
        }
    }

    /// The interval of the current phase, for a retry after a failed read.
    private var interval: Duration {
        switch phase {
        case .connecting(_, let next, let overdue): overdue ? timings.retryLook : next
        case .up, .stale, .idle: timings.retryLook
        }
    }

    private mutating func report(_ new: WireGuardEvidence) -> [WireGuardEvidenceAction] {
        guard new != evidence else { return [] }
        evidence = new
        return [.report(new)]
    }

    private func age(_ handshake: Duration, now: Duration) -> Duration { max(.zero, now - handshake) }

    private mutating func judge(_ samples: [WireGuardPeerSample], now: Duration) -> [WireGuardEvidenceAction] {
        let byKey = Dictionary(samples.map { ($0.publicKey, $0) }, uniquingKeysWith: { first, _ in first })
        let watched = peers.isEmpty ? samples.map(\.publicKey) : peers
        // A configured peer the device no longer lists has no handshake.
        let handshakes = watched.map { key in (key, byKey[key]?.lastHandshake) }
        let allFresh = !watched.isEmpty && handshakes.allSatisfy { _, handshake in
            handshake.map { age($0, now: now) < timings.rejectAfter } ?? false
        }

        switch phase {
        case .idle:
            return []
        case .connecting(let since, let next, let overdue):
            if allFresh { return becomeUp(handshakes, now: now) }
            let waited = max(.zero, now - since)
            if !overdue, waited >= timings.connectTimeout {
                phase = .connecting(since: since, nextInterval: next, overdue: true)
                let missing = handshakes.filter { $0.1 == nil }.map { Self.name($0.0) }
                let who = missing.isEmpty ? "every peer" : missing.joined(separator: ", ")
                return report(.handshakeOverdue("no handshake with \(who) \(Self.seconds(waited)) after configuring it (wrong key, server down or transport blocked?)"))
                    + [.scheduleLook(after: timings.retryLook)]
            }
            if overdue { return [.scheduleLook(after: timings.retryLook)] }
            let following = min(next * 2, timings.connectingCap)
            phase = .connecting(since: since, nextInterval: following, overdue: false)
            return [.scheduleLook(after: following)]
        case .up(let suspectSince):
            // Peers whose latest handshake is past reject-after (or gone: the device lost them).
            let old = watched.filter { key in
                byKey[key]?.lastHandshake.map { age($0, now: now) >= timings.rejectAfter } ?? true
            }
            if old.isEmpty {
                phase = .up(suspectSince: nil)
                return [.scheduleLook(after: nextUpLook(handshakes, now: now))]
            }
            if let suspectSince {
                // The wall clock went back (NTP, a manual set): the grace starts again from now,
                // rather than being stretched by the jump.
                guard now >= suspectSince else {
                    phase = .up(suspectSince: now)
                    return [.scheduleLook(after: timings.staleGrace)]
                }
                let waited = now - suspectSince
                guard waited >= timings.staleGrace else { return [.scheduleLook(after: timings.staleGrace - waited)] }
                phase = .stale
                let ages = old.map { key in
                    byKey[key]?.lastHandshake.map { "\(Self.name(key)) \(Self.seconds(age($0, now: now))) ago" }
                        ?? "\(Self.name(key)) never"
                }
                return report(.stale("latest handshake with \(ages.joined(separator: ", ")) while sending to it"))
                    + [.scheduleLook(after: timings.retryLook)]
            }
            // An old handshake matters only while something is sent: then a new one was due.
            let sending = old.filter { key in
                guard let sample = byKey[key], sample.lastHandshake != nil else { return true }
                guard let before = previousSent[key] else { return false }
                return sample.sentBytes > before
            }
            if sending.isEmpty {
                phase = .up(suspectSince: nil)
                return [.scheduleLook(after: timings.idleLook)]
            }
            phase = .up(suspectSince: now)
            return [.scheduleLook(after: timings.staleGrace)]
        case .stale:
            if allFresh { return becomeUp(handshakes, now: now) }
            return [.scheduleLook(after: timings.retryLook)]
        }
    }

    private mutating func becomeUp(_ handshakes: [(WireGuardKey, Duration?)], now: Duration) -> [WireGuardEvidenceAction] {
        phase = .up(suspectSince: nil)
        return report(.up) + [.scheduleLook(after: nextUpLook(handshakes, now: now))]
    }

    /// When the oldest handshake would pass `rejectAfter` (plus a second, so it has), at least
    /// `upMinimum` from now; `idleLook` when it has passed already (nothing is being sent).
    private func nextUpLook(_ handshakes: [(WireGuardKey, Duration?)], now: Duration) -> Duration {
        let remaining = handshakes.compactMap(\.1).map { timings.rejectAfter - age($0, now: now) }.min() ?? .zero
        guard remaining > .zero else { return timings.idleLook }
        return min(max(remaining + .seconds(1), timings.upMinimum), timings.rejectAfter)
    }

    /// A peer as messages name it: the start of its public key.
    static func name(_ key: WireGuardKey) -> String { "peer " + String(key.base64.prefix(8)) + "…" }

    static func seconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return seconds >= 10 ? "\(seconds) s" : "\(seconds).\(attoseconds / 100_000_000_000_000_000) s"
    }
}
