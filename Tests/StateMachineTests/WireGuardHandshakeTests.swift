import StateMachine
import Testing

/// Drives a monitor through scripted looks, as the driver would: each `scheduleLook` is followed
/// (after its delay, on the scripted clock) by `lookDue`, and each `readPeers` is answered from
/// `device`, a function of time.
private struct Script {
    var monitor = WireGuardHandshakeMonitor()
    var now: Duration = .seconds(1_800_000_000)
    var reports: [(Duration, WireGuardEvidence)] = []
    var looks: [Duration] = []
    let started: Duration

    init(peers: [WireGuardKey]) {
        started = now
        apply(monitor.handle(.peersConfigured(peers, at: now)))
    }

    mutating func apply(_ actions: [WireGuardEvidenceAction]) {
        for action in actions {
            if case .report(let evidence) = action { reports.append((now - started, evidence)) }
        }
        pending = actions.compactMap { if case .scheduleLook(let after) = $0 { after } else { nil } }.last
    }

    var pending: Duration?

    /// Runs looks until `until` (seconds after configuration), answering reads with `device(t)`.
    mutating func run(until end: Duration, device: (Duration) -> [WireGuardPeerSample]?) {
        while let delay = pending, now - started + delay <= end {
            now += delay
            looks.append(now - started)
            pending = nil
            var actions = monitor.handle(.lookDue)
            #expect(actions == [.readPeers])
            if let samples = device(now - started) {
                actions = monitor.handle(.sampled(samples, at: now))
            } else {
                actions = monitor.handle(.readFailed("connect: Connection refused"))
            }
            apply(actions)
        }
    }

    var lastEvidence: WireGuardEvidence? { reports.last?.1 }
}

private let server = WireGuardKey(base64: WireGuardFixtures.serverKey)!
private let other = WireGuardKey(base64: WireGuardFixtures.otherKey)!

@Suite("WireGuard handshake evidence")
struct WireGuardHandshakeTests {
    /// The first look is 100 ms after configuration, then 200, 400, 800 ms, then every second;
    /// the handshake at 0.35 s is seen at the 0.7 s look.
    @Test func connectingIsWatchedClosely() {
        var script = Script(peers: [server])
        let start = script.now
        script.run(until: .seconds(3)) { t in
            [WireGuardPeerSample(publicKey: server, lastHandshake: t >= .milliseconds(350) ? start + .milliseconds(350) : nil, sentBytes: 148)]
        }
        #expect(script.reports.map(\.1) == [.connecting, .up])
        #expect(script.reports.last?.0 == .milliseconds(700))
        #expect(script.looks.prefix(3) == [.milliseconds(100), .milliseconds(300), .milliseconds(700)])
    }

    /// A wrong key: no handshake ever. Overdue after 20 s, then a look every 5 s; never up.
    @Test func aWrongKeyIsOverdueNeverUp() {
        var script = Script(peers: [server])
        script.run(until: .seconds(60)) { t in
            [WireGuardPeerSample(publicKey: server, lastHandshake: nil, sentBytes: UInt64(148 * (Int(t.components.seconds) / 5 + 1)))]
        }
        #expect(script.reports.map(\.1) == [.connecting, .handshakeOverdue(
            "no handshake with peer J68c2Abc… 20 s after configuring it (wrong key, server down or transport blocked?)")])
        let afterOverdue = script.looks.drop { $0 < .seconds(21) }
        #expect(zip(afterOverdue, afterOverdue.dropFirst()).allSatisfy { $1 - $0 == .seconds(5) })
        // 1 s apart until 20 s: about 24 looks in the first 20 s, then 8 in the next 40.
        #expect(script.looks.count < 35, "\(script.looks.count) looks in 60 s")
    }

    /// Up with WireGuard rekeying every 120 s while traffic flows: one look per rekey period or
    /// so, never stale; then the server goes away at 600 s: stale about 190 s later (reject-after
    /// plus the grace), and up again once handshakes resume.
    @Test func upIsLookedAtRarelyAndAServerThatGoesIsStale() {
        var script = Script(peers: [server])
        let start = script.now
        let serverGoneAt: Duration = .seconds(600), serverBackAt: Duration = .seconds(1000)
        script.run(until: .seconds(1100)) { t in
            // Handshakes at 0.05 s, then every 120 s while the server is there; keepalives every
            // 25 s make the counter grow all the time.
            var last: Duration = .milliseconds(50)
            while last + .seconds(120) <= t && last + .seconds(120) < serverGoneAt { last += .seconds(120) }
            if t >= serverBackAt { last = serverBackAt + .seconds(1) }
            return [WireGuardPeerSample(publicKey: server, lastHandshake: t >= .milliseconds(50) ? start + last : nil,
                                        sentBytes: UInt64(t.components.seconds / 25) * 32 + 148)]
        }
        let evidence = script.reports.map(\.1)
        #expect(evidence.count == 4)
        #expect(evidence.prefix(2) == [.connecting, .up])
        guard evidence.count == 4, case .stale(let why) = evidence[2] else {
            Issue.record("no stale report: \(script.reports)")
            return
        }
        #expect(why.hasPrefix("latest handshake with peer J68c2Abc… "))
        #expect(why.hasSuffix(" s ago while sending to it"))
        let staleAt = script.reports[2].0
        // The last handshake before the outage was at 480.05 s; it is 180 s old at 660 s.
        #expect(staleAt >= .seconds(660) && staleAt <= .seconds(680), "\(staleAt)")
        #expect(evidence[3] == .up)
        #expect(script.reports[3].0 >= serverBackAt + .seconds(1) && script.reports[3].0 <= serverBackAt + .seconds(6))
        // While up (1 s ... 600 s): one look per 2 minutes or so.
        let upLooks = script.looks.filter { $0 > .seconds(1) && $0 < serverGoneAt }.count
        #expect(upLooks >= 4 && upLooks <= 8, "\(upLooks) looks in 10 minutes up")
    }

    /// An idle tunnel without keepalive: the handshake ages past 180 s but nothing is sent, so
    /// it stays up; once traffic starts and no handshake follows, it is stale.
    @Test func oldHandshakesOfAnIdleTunnelAreNotStale() {
        var script = Script(peers: [server])
        let start = script.now
        script.run(until: .seconds(1000)) { t in
            let sent: UInt64 = t < .seconds(800) ? 148 : 148 + UInt64((t - .seconds(800)).components.seconds) * 100
            return [WireGuardPeerSample(publicKey: server, lastHandshake: start + .milliseconds(50), sentBytes: sent)]
        }
        #expect(script.reports.map(\.1).prefix(2) == [.connecting, .up])
        #expect(script.reports.count == 3)
        let staleAt = script.reports.last?.0 ?? .zero
        // Looks every 30 s once idle: traffic starting at 800 s is seen by 830 s, stale 10 s later.
        #expect(staleAt > .seconds(800) && staleAt <= .seconds(845), "\(staleAt)")
    }

    /// The grace: a packet sent just before a look starts a handshake that completes in
    /// milliseconds; one look with an old handshake and growing counters is not yet stale.
    @Test func aHandshakeThatCompletesWithinTheGraceKeepsItUp() {
        var monitor = WireGuardHandshakeMonitor()
        let t0: Duration = .seconds(1_800_000_000)
        _ = monitor.handle(.peersConfigured([server], at: t0))
        _ = monitor.handle(.sampled([WireGuardPeerSample(publicKey: server, lastHandshake: t0 + .seconds(1), sentBytes: 100)], at: t0 + .seconds(1)))
        #expect(monitor.evidence == .up)
        var actions = monitor.handle(.sampled([WireGuardPeerSample(publicKey: server, lastHandshake: t0 + .seconds(1), sentBytes: 200)], at: t0 + .seconds(400)))
        #expect(actions == [.scheduleLook(after: .seconds(10))])
        actions = monitor.handle(.sampled([WireGuardPeerSample(publicKey: server, lastHandshake: t0 + .seconds(401), sentBytes: 300)], at: t0 + .seconds(410)))
        #expect(monitor.evidence == .up)
        #expect(actions == [.scheduleLook(after: .seconds(172))])
    }

    /// Several peers: up only when every peer has a handshake; the message names the missing one.
    @Test func everyPeerCounts() {
        var monitor = WireGuardHandshakeMonitor()
        let t0: Duration = .seconds(1_800_000_000)
        _ = monitor.handle(.peersConfigured([server, other], at: t0))
        _ = monitor.handle(.sampled([WireGuardPeerSample(publicKey: server, lastHandshake: t0, sentBytes: 1),
                                     WireGuardPeerSample(publicKey: other, lastHandshake: nil, sentBytes: 1)], at: t0 + .seconds(1)))
        #expect(monitor.evidence == .connecting)
        _ = monitor.handle(.sampled([WireGuardPeerSample(publicKey: server, lastHandshake: t0, sentBytes: 1)], at: t0 + .seconds(25)))
        #expect(monitor.evidence == .handshakeOverdue("no handshake with peer Yz0xibsL… 25 s after configuring it (wrong key, server down or transport blocked?)"))
        _ = monitor.handle(.sampled([WireGuardPeerSample(publicKey: server, lastHandshake: t0, sentBytes: 1),
                                     WireGuardPeerSample(publicKey: other, lastHandshake: t0 + .seconds(26), sentBytes: 1)], at: t0 + .seconds(26)))
        #expect(monitor.evidence == .up)
    }

    /// wireguard-go gone or hung: three failed reads in a row are stale; a read that works again
    /// and shows fresh handshakes is up.
    @Test func aDeviceThatStopsAnsweringIsStale() {
        var monitor = WireGuardHandshakeMonitor()
        let t0: Duration = .seconds(1_800_000_000)
        _ = monitor.handle(.peersConfigured([server], at: t0))
        _ = monitor.handle(.sampled([WireGuardPeerSample(publicKey: server, lastHandshake: t0, sentBytes: 1)], at: t0 + .seconds(1)))
        #expect(monitor.evidence == .up)
        #expect(monitor.handle(.readFailed("timed out")) == [.scheduleLook(after: .seconds(5))])
        _ = monitor.handle(.readFailed("timed out"))
        let third = monitor.handle(.readFailed("timed out"))
        #expect(third == [.report(.stale("the device does not answer (timed out)")), .scheduleLook(after: .seconds(5))])
        _ = monitor.handle(.sampled([WireGuardPeerSample(publicKey: server, lastHandshake: t0 + .seconds(30), sentBytes: 2)], at: t0 + .seconds(31)))
        #expect(monitor.evidence == .up)
    }

    /// Reconfiguring starts over; stopping cancels the look and ignores late answers.
    @Test func reconfigureAndStop() {
        var monitor = WireGuardHandshakeMonitor()
        let t0: Duration = .seconds(1_800_000_000)
        _ = monitor.handle(.peersConfigured([server], at: t0))
        _ = monitor.handle(.sampled([WireGuardPeerSample(publicKey: server, lastHandshake: t0, sentBytes: 1)], at: t0 + .seconds(1)))
        #expect(monitor.handle(.peersConfigured([server], at: t0 + .seconds(2)))
                == [.report(.connecting), .scheduleLook(after: .milliseconds(100))])
        #expect(monitor.handle(.stopped) == [.cancelLook])
        #expect(monitor.handle(.lookDue) == [])
        #expect(monitor.handle(.sampled([], at: t0 + .seconds(3))) == [])
        #expect(monitor.handle(.readFailed("x")) == [])
        #expect(monitor.evidence == nil)
    }

    /// A wall clock stepped back: a handshake "in the future" counts as fresh, not as an error.
    @Test func aClockSteppedBackIsNotStale() {
        var monitor = WireGuardHandshakeMonitor()
        let t0: Duration = .seconds(1_800_000_000)
        _ = monitor.handle(.peersConfigured([server], at: t0))
        _ = monitor.handle(.sampled([WireGuardPeerSample(publicKey: server, lastHandshake: t0 + .seconds(5), sentBytes: 1)], at: t0 - .seconds(3600)))
        #expect(monitor.evidence == .up)
    }

    /// A wall clock stepped back while an old handshake is under its grace: the grace starts
    /// again from the new time, and the next look is never further off than the grace (a look
    /// stretched by the jump would leave a dead server unnoticed for as long as the jump). Found
    /// by `wireguardGoRunsOnlyUnderATransportPolicy` (a look 190 s away).
    @Test func aClockSteppedBackDuringTheGraceRestartsIt() {
        var monitor = WireGuardHandshakeMonitor()
        let t0: Duration = .seconds(1_800_000_000)
        _ = monitor.handle(.peersConfigured([server], at: t0))
        _ = monitor.handle(.sampled([WireGuardPeerSample(publicKey: server, lastHandshake: t0 + .seconds(1), sentBytes: 100)], at: t0 + .seconds(1)))
        #expect(monitor.evidence == .up)
        // Past reject-after while sending: suspect, looked at again after the grace.
        let old = WireGuardPeerSample(publicKey: server, lastHandshake: t0 + .seconds(1), sentBytes: 200)
        #expect(monitor.handle(.sampled([old], at: t0 + .seconds(400))) == [.scheduleLook(after: .seconds(10))])
        // The clock steps back 180 s, the handshake still past reject-after: the grace is 10 s
        // again, not 190.
        let later = WireGuardPeerSample(publicKey: server, lastHandshake: t0 + .seconds(1), sentBytes: 300)
        #expect(monitor.handle(.sampled([later], at: t0 + .seconds(220))) == [.scheduleLook(after: .seconds(10))])
        #expect(monitor.evidence == .up)
    }
}
