import PropertyBased
import StateMachine
import Testing

// Random event sequences over a WireGuard machine: the shared events with the wg-quick
// configurations in place of OpenVPN's, WireGuard's own events with handshakes and read times
// drawn at random, and the name-resolution answers a running tunnel may get.

private let wireGuardSharedEvents: [Event] = representativeEvents.map { event in
    switch event {
    case loaded: wireGuardLoaded
    case loadedWithHostNames: wireGuardLoadedWithHostNames
    case reloaded: wireGuardReloaded
    default: event
    }
} + [Scenario.threeAddressesResolved]

/// An index into the shared events, or one of WireGuard's with random times and counters.
private let wireGuardEventGen = zip(Gen.int(in: 0...(wireGuardSharedEvents.count + 3)), Gen.int(in: 0...400),
                                    Gen.int(in: 0...400), Gen.bool, Gen.uint64(in: 0...10_000))
    .map { index, first, second, none, sent -> Event in
        switch index {
        case wireGuardSharedEvents.count: peersRead(handshake: none ? nil : .seconds(first), sent: sent, at: .seconds(second))
        case wireGuardSharedEvents.count + 1: .tunnelPeersConfigured(at: configuredAt + .seconds(first))
        case wireGuardSharedEvents.count + 2: handshakeLook
        case wireGuardSharedEvents.count + 3: peersReadFailed
        default: wireGuardSharedEvents[index]
        }
    }
/// From `.start`, or from one of the WireGuard scenarios (random events alone seldom get past
/// Killswitched), then up to 100 random events.
private let wireGuardRunGen = zip(Gen.int(in: 0...Scenario.wireGuard.count), wireGuardEventGen.array(of: 0...100))
    .map { start, events in
        (start == Scenario.wireGuard.count ? [Event.start] : Scenario.wireGuard[start].path) + events
    }

extension Scenario {
    static let threeAddressesResolved = Event.namesResolved(
        addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 7), IPv4Address(198, 51, 100, 8)]], failures: [:])
}

@Suite("WireGuard properties")
struct WireGuardPropertyTests {
    /// The policy requested is always the state's, and the resolving ruleset of a running tunnel
    /// is that policy plus marked DNS and nothing more.
    @Test func policiesHoldAndResolutionOnlyAddsMarkedDNS() async {
        await propertyCheck(count: 300, input: wireGuardRunGen) { events in
            var machine = Machine(timings: .exact)
            for event in events {
                let actions = machine.handle(event)
                #expect(machine.requestedPolicy == machine.state.policy, "after \(label(event))")
                if actions.contains(.openNameResolution), machine.isConfigured, let policy = machine.requestedPolicy,
                   let configuration = machine.configuration {
                    #expect(machine.resolvingRuleset == machine.ruleset(for: policy)?.addingNameResolution(
                        nameservers: machine.nameservers, wanInterface: configuration.wanInterface, mark: Configuration.transportMark))
                }
            }
        }
    }

    /// wireguard-go is started and configured only under a committed policy that lets its
    /// transport out, and never while Killswitched; its handshakes are read only while it runs.
    @Test func wireguardGoRunsOnlyUnderATransportPolicy() async {
        await propertyCheck(count: 300, input: wireGuardRunGen) { events in
            var machine = Machine(timings: .exact)
            var kernel: FirewallPolicy?
            var committed: FirewallPolicy?
            for event in events {
                let requestedBefore = machine.requestedPolicy
                if case .firewallCommitted(let policy) = event, policy == requestedBefore { kernel = policy; committed = policy }
                if case .firewallTampered = event { kernel = nil }
                // The answer to a resolution the machine opened: at start-up the kernel holds the
                // lockdown plus DNS; while a running tunnel's names are resolved again, the policy
                // requested plus marked DNS (`reresolvingRuleset`), which lets the transport out as
                // the policy alone does.
                if case .nameResolutionOpened = event {
                    if machine.namesBeingResolved != nil {
                        kernel = nil
                    } else if machine.namesBeingReresolved != nil {
                        kernel = requestedBefore?.allowsTransport == true ? requestedBefore : nil
                    }
                }
                for action in machine.handle(event) {
                    switch action {
                    case .startTunnel, .releaseTunnel:
                        let holding = action == .startTunnel ? committed : kernel
                        #expect(holding?.allowsTransport == true, "\(label(action)) after \(label(event))")
                        #expect(machine.state != .killswitched)
                    case .readTunnelPeers:
                        #expect(machine.tunnelPID != nil && machine.state != .killswitched, "after \(label(event))")
                    case .scheduleTimer(.handshakeLook, let after):
                        #expect(after > .zero && after <= .seconds(180))
                    default:
                        break
                    }
                }
            }
        }
    }

    /// However the run went, SIGTERM and wireguard-go's end exit once, with 0, under the lockdown,
    /// and nothing is left to look at.
    @Test func shutdownExitsOnceAndStopsLooking() async {
        await propertyCheck(count: 300, input: wireGuardRunGen) { events in
            var machine = Machine(timings: .exact)
            for event in events where event != .shutdownRequested { _ = machine.handle(event) }
            var actions = machine.handle(.shutdownRequested)
            actions += machine.handle(.tunnelProcessExited(.signaled(15)))
            actions += machine.handle(handshakeLook)
            #expect(actions.filter { if case .exit = $0 { true } else { false } } == [.exit(code: 0, message: nil)])
            #expect(machine.requestedPolicy == .lockdown)
            #expect(machine.wireGuardEvidence == nil)
            #expect(!actions.contains(.readTunnelPeers))
        }
    }
}
