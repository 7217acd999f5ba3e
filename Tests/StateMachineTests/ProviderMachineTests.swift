import PropertyBased
import StateMachine
import Testing

// Machine+Provider.swift: OpenVPN's end judged with what its output said (a configuration it
// refuses is exit 78 before the tunnel ever connected, Killswitched until SIGHUP afterwards, and
// never a crash loop), and host names resolved again once every pinned address failed a full round.

private let refusedLine = "CONFIG=/config/client.ovpn: OpenVPN exited with status 1: " + optionsErrorLine
private let heldExit = Action.scheduleTimer(.tunnelOutput, after: .seconds(2))
private let respawnAfterCrash: [Action] = [.forgetTunnelProcess, .scheduleTimer(.crashWindow, after: .seconds(60)), .scheduleTimer(.respawn, after: .milliseconds(250))]

/// The host-name configuration with two addresses for the name and a literal beside it.
private let twoAddressesAndALiteral = LoadedConfiguration(
    configuration: exampleConfiguration,
    remotes: [Remote(host: "vpn.example.net", port: 1194, transport: .udp), Remote(host: "192.0.2.1", port: 443, transport: .tcp)],
    nameservers: [IPv4Address(192, 0, 2, 53)], credentials: CredentialsToken(generation: 1))

private func endpoint(_ last: UInt8, _ port: UInt16 = 1194, _ transport: TransportProtocol = .udp) -> Endpoint {
    Endpoint(address: IPv4Address(198, 51, 100, last), port: port, transport: transport)
}

private func modify(_ last: UInt8) -> Action { .answerRemote(.modify(IPv4Address(198, 51, 100, last), port: 1194)) }

@Suite("OpenVPN's configuration errors")
struct ConfigurationErrorTests {
    @Test func refusedBeforeTheFirstConnectionEndsRunWith78AfterTheLockdown() {
        var machine = Scenario.outputWatched.machine()
        #expect(machine.handle(exited) == [heldExit])
        #expect(machine.tunnelPID == nil, "an exit waiting for its output is an exit: never signalled")
        let actions = machine.handle(optionsError)
        #expect(actions == [.cancelTimer(.tunnelOutput), .forgetTunnelProcess, .applyFirewall(.lockdown), .cancelTimer(.respawn),
                            .cancelTimer(.crashWindow), .exit(code: 78, message: refusedLine)])
        #expect(machine.state == .killswitched)
        #expect(machine.reason == refusedLine)
        #expect(!actions.contains(.startTunnel) && !actions.contains { if case .scheduleTimer(.respawn, _) = $0 { true } else { false } })
    }

    @Test func theOutputMayEndBeforeTheExitIsReported() {
        var machine = Scenario.outputWatched.machine()
        #expect(machine.handle(optionsError) == [], "the output's end alone decides nothing")
        #expect(machine.handle(exited) == [.forgetTunnelProcess, .applyFirewall(.lockdown), .cancelTimer(.respawn),
                                           .cancelTimer(.crashWindow), .exit(code: 78, message: refusedLine)])
    }

    @Test func afterAConnectionARefusedConfigurationWaitsForSIGHUP() {
        var machine = Scenario.outputWatched.machine()
        feed(&machine, [.tunnelHeld, .tunnelConnected, .tunnelLinkUp, .firewallCommitted(.up)])
        #expect(machine.state == .tunnelUp)
        // OpenVPN ends (a key file changed under it), is respawned, and now refuses the file.
        feed(&machine, [exited, outputEnded])
        #expect(machine.state == .tunnelConnecting)
        feed(&machine, [.firewallCommitted(.connecting), .timerFired(.respawn), Event.tunnelStarted(pid: 4343), .tunnelOutputWatched, exited])
        let actions = machine.handle(optionsError)
        #expect(machine.state == .killswitched)
        #expect(machine.reason == refusedLine)
        #expect(!actions.contains { if case .exit = $0 { true } else { false } }, "exiting would be wrong now")
        #expect(!actions.contains { if case .scheduleTimer(.retry, _) = $0 { true } else { false } }, "never retried as is")
        feed(&machine, [.firewallCommitted(.lockdown)])
        #expect(machine.handle(.timerFired(.retry)) == [])
        #expect(machine.handle(.firewallFailed(.lockdown, "EPERM")) == [.cancelTimer(.respawn)], "stays waiting for SIGHUP")
        #expect(machine.handle(.lanAddressPresent) == [])
        #expect(machine.state == .killswitched)
        #expect(machine.handle(.reloadRequested) == [.reloadConfiguration])
        #expect(machine.handle(reloaded) == [.cancelTimer(.retry), .applyFirewall(.connecting)])
        #expect(machine.state == .addressAssigned)
    }

    @Test func afterAReloadARefusedConfigurationKillsTheSwitch() {
        var machine = Scenario.outputWatched.machine()
        #expect(machine.handle(reloaded) == [.applyFirewall(.connecting), .stopTunnel])
        // The old OpenVPN ends; the new one starts at once with the reloaded file, and refuses it.
        #expect(machine.handle(exited) == [heldExit])
        #expect(machine.handle(outputEnded) == [.cancelTimer(.tunnelOutput), .forgetTunnelProcess, .startTunnel])
        feed(&machine, [Event.tunnelStarted(pid: 4343), .tunnelOutputWatched, exited])
        let actions = machine.handle(optionsError)
        #expect(machine.state == .killswitched)
        #expect(machine.reason == refusedLine)
        #expect(!actions.contains { if case .exit = $0 { true } else { false } })
    }

    @Test func crashesWithoutAConfigurationErrorStillMakeACrashLoop() {
        var machine = Scenario.outputWatched.machine()
        var last: [Action] = []
        for round in 1...5 {
            #expect(machine.handle(exited) == [heldExit])
            last = machine.handle(outputEnded)
            if round < 5 {
                #expect(machine.state == .tunnelConnecting)
                feed(&machine, [.timerFired(.respawn), Event.tunnelStarted(pid: 5000 + Int32(round)), .tunnelOutputWatched])
            }
        }
        #expect(machine.state == .killswitched)
        #expect(machine.reason?.hasPrefix("crash loop: OpenVPN ended 5 times") == true)
        #expect(!last.contains { if case .exit = $0 { true } else { false } })
    }

    @Test func theGraceJudgesAnExitWhoseOutputStaysOpen() {
        var machine = Scenario.outputWatched.machine()
        #expect(machine.handle(exited) == [heldExit])
        #expect(machine.handle(.timerFired(.tunnelOutput)) == respawnAfterCrash)
        #expect(machine.reason == "OpenVPN exited with status 1")
        // The output's end comes after all: it is no longer this process's.
        #expect(machine.handle(optionsError) == [])
        #expect(machine.state == .tunnelConnecting)
    }

    @Test func strayOutputEventsChangeNothing() {
        for scenario in [Scenario.initial, .addressAssigned, .killswitched] {
            var machine = scenario.machine()
            for event in [Event.tunnelOutputWatched, outputEnded, optionsError, .timerFired(.tunnelOutput)] {
                #expect(machine.handle(event) == [], "\(scenario.name) + \(label(event))")
                #expect(machine.state == scenario.state)
            }
        }
        // A tunnel whose output is not read is judged at its exit, as before.
        var machine = Scenario.tunnelConnecting.machine()
        _ = machine.handle(optionsError)
        #expect(machine.handle(exited) == respawnAfterCrash)
    }
}

@Suite("Host names that move")
struct ReresolutionTests {
    /// TunnelConnecting with the name's two addresses and the literal pinned, OpenVPN held.
    private func pinnedTwoAndALiteral() -> Machine {
        var machine = Machine(timings: .exact)
        feed(&machine, [.start, .firewallCommitted(.lockdown), .configurationLoaded(twoAddressesAndALiteral),
                        .nameResolutionOpened,
                        .namesResolved(addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 7), IPv4Address(198, 51, 100, 8)]],
                                       failures: [:], elapsed: .milliseconds(2)),
                        .firewallCommitted(.lockdown), .lanAddressPresent, .firewallCommitted(.connecting), started,
                        .tunnelOutputWatched, .tunnelControlConnected, .tunnelHeld])
        precondition(machine.state == .tunnelConnecting)
        return machine
    }

    private let literalAsked = Event.remoteRequested(host: "192.0.2.1", port: 443, proto: "tcp-client")

    @Test func onlyAFullRoundOfFailuresResolvesAgain() {
        var machine = pinnedTwoAndALiteral()
        #expect(machine.pins?.endpoints == [endpoint(7), endpoint(8), Endpoint(address: IPv4Address(192, 0, 2, 1), port: 443, transport: .tcp)])
        #expect(machine.handle(hostAsked) == [modify(7)])
        #expect(machine.handle(literalAsked) == [.answerRemote(.accept)])
        #expect(machine.handle(hostAsked) == [modify(8)])
        // 198.51.100.7, 192.0.2.1 and 198.51.100.8 each failed once: the round is full.
        #expect(machine.handle(literalAsked) == [.openNameResolution])
        #expect(machine.namesBeingReresolved == ["vpn.example.net"])
        #expect(machine.state == .tunnelConnecting)
    }

    @Test func aConnectionStartsTheRoundAgain() {
        var machine = pinnedTwoAndALiteral()
        feed(&machine, [hostAsked, literalAsked, hostAsked, .tunnelConnected])
        // It connected at 198.51.100.8; it lost the connection and asks again: a new round.
        #expect(machine.handle(literalAsked) == [.answerRemote(.accept)])
        #expect(machine.handle(hostAsked) == [modify(7)])
    }

    @Test func newAddressesAreCommittedInOneTransactionBeforeOpenVPNGetsOne() {
        var machine = pinnedTwoAndALiteral()
        feed(&machine, [hostAsked, literalAsked, hostAsked])
        #expect(machine.handle(literalAsked) == [.openNameResolution])
        // The resolving ruleset holds now: a new hold waits, as OpenVPN's question does.
        #expect(machine.handle(.nameResolutionOpened) == [.resolveNames(["vpn.example.net"])])
        let moved = Event.namesResolved(addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 9)]], failures: [:],
                                        elapsed: .milliseconds(4))
        #expect(machine.handle(moved) == [.applyFirewall(.connecting)])
        let connecting = machine.ruleset(for: .connecting)!.nftText
        #expect(connecting.contains("198.51.100.9"), "the new address is pinned")
        #expect(!connecting.contains("198.51.100.7") && !connecting.contains("198.51.100.8"), "the old ones are not")
        #expect(connecting.contains("192.0.2.1"), "the literal stays")
        // Only once that ruleset is committed does OpenVPN get the new address (the question it
        // asked last, the literal, is answered now).
        #expect(machine.handle(.firewallCommitted(.connecting)) == [.answerRemote(.accept)])
        #expect(machine.handle(hostAsked) == [modify(9)])
        #expect(machine.lastResolution == NameResolution(
            cause: .everyEndpointFailed, names: ["vpn.example.net"],
            addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 9)]], failures: [:], elapsed: .milliseconds(4),
            endpoints: [endpoint(9), Endpoint(address: IPv4Address(192, 0, 2, 1), port: 443, transport: .tcp)]))
    }

    @Test func aNameThatNoLongerResolvesKeepsItsPins() {
        var machine = Scenario.reresolving.machine()
        #expect(machine.handle(.namesResolved(addresses: [:], failures: ["vpn.example.net": "NXDOMAIN"])) == [.applyFirewall(.connecting)])
        #expect(machine.pins?.endpoints == [endpoint(7)])
        #expect(machine.handle(.firewallCommitted(.connecting)) == [modify(7)])
        #expect(machine.lastResolution?.failures == ["vpn.example.net": "NXDOMAIN"])
    }

    @Test func aResolvingRulesetThatCannotBeCommittedKeepsThePins() {
        var machine = Scenario.reresolutionOpening.machine()
        #expect(machine.handle(.nameResolutionFailed("EPERM")) == [modify(7)])
        #expect(machine.namesBeingReresolved == nil)
        #expect(machine.lastResolution?.failures == ["vpn.example.net": "the resolving ruleset was not committed: EPERM"])
    }

    @Test func literalsOnlyAreNeverResolvedAgain() {
        var machine = Scenario.outputWatched.machine()
        for _ in 1...4 { #expect(machine.handle(remoteAsked) == [.answerRemote(.accept)]) }
    }

    @Test func degradedResolvesAgainAndCommitsTheUpPolicyWithTheNewAddress() {
        var machine = Scenario.hostNameConnecting.machine()
        feed(&machine, [.tunnelConnected, .tunnelLinkUp, .firewallCommitted(.up), reconnecting])
        #expect(machine.state == .degraded)
        #expect(machine.handle(hostAsked) == [modify(7)])
        #expect(machine.handle(hostAsked) == [.openNameResolution])
        feed(&machine, [.nameResolutionOpened])
        #expect(machine.handle(moved) == [.applyFirewall(.up)])
        #expect(machine.ruleset(for: .up)!.nftText.contains("198.51.100.9"))
        #expect(machine.handle(.firewallCommitted(.up)) == [modify(9)])
        #expect(machine.state == .degraded)
    }

    @Test func shutdownOrAKilledSwitchEndsAResolutionUnderWay() {
        var stopping = Scenario.reresolving.machine()
        _ = stopping.handle(.shutdownRequested)
        #expect(stopping.namesBeingReresolved == nil)
        #expect(stopping.handle(moved) == [])
        var killed = Scenario.reresolving.machine()
        _ = killed.handle(.authenticationFailed)
        #expect(killed.state == .killswitched)
        #expect(killed.handle(moved) == [])
        #expect(killed.handle(.firewallCommitted(.lockdown)) == [])
    }

    @Test func startUpResolutionIsRecordedForTheStatus() {
        var machine = Scenario.resolving.machine()
        _ = machine.handle(.namesResolved(addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 7)]], failures: [:],
                                          elapsed: .milliseconds(2)))
        #expect(machine.lastResolution == NameResolution(cause: .startUp, names: ["vpn.example.net"],
                                                         addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 7)]],
                                                         failures: [:], elapsed: .milliseconds(2), endpoints: [endpoint(7)]))
    }

    @Test func profilesRunSkipsAreAskedAbout() {
        let review = OpenVPNConfigReview(text: "client\nremote 192.0.2.1 1194\nremote 2001:db8::1 1194\n", path: "/config/client.ovpn")
        var machine = Machine(timings: .exact)
        feed(&machine, [.start, .firewallCommitted(.lockdown),
                        .configurationLoaded(LoadedConfiguration(configuration: exampleConfiguration, remotes: review.remotes,
                                                                 credentials: CredentialsToken(generation: 1),
                                                                 findings: review.vetted.findings, skippedRemotes: review.skipped))])
        // The literal alone would need no question; the IPv6 one must be skipped, so OpenVPN asks.
        #expect(machine.tunnelPlan?.asksForRemotes == true)
        #expect(machine.skippedRemotes.map(\.profile.host) == ["2001:db8::1"])
        #expect(Scenario.initial.machine().tunnelPlan?.asksForRemotes == false)
    }
}

/// Host-name configurations driven at random from the first question on, with OpenVPN asking
/// about its name and the name moving among the representative events.
private let reresolutionEventGen = Gen.int(in: 0...(representativeEvents.count + 5)).map { index -> Event in
    index < representativeEvents.count ? representativeEvents[index] : [hostAsked, hostAsked, moved, .nameResolutionOpened, outputEnded, optionsError][index - representativeEvents.count]
}

@Suite("Host names that move: properties")
struct ReresolutionPropertyTests {
    /// What the kernel holds, as far as the machine's commits say.
    enum Kernel: Equatable {
        case policy(FirewallPolicy, [Endpoint])
        case resolving
        /// Changed from outside; the repair is under way.
        case unknown
    }

    /// Whatever happens, while the tunnel is wanted OpenVPN gets an address only under a committed
    /// ruleset that lets its transport out to that address (never under the resolving ruleset,
    /// never before the new addresses are committed), and the resolving ruleset is asked for only
    /// while the tunnel is wanted.
    @Test func anAddressIsHandedOutOnlyOnceCommitted() async {
        await propertyCheck(count: 400, input: reresolutionEventGen.array(of: 0...120)) { events in
            var machine = Scenario.hostNameConnecting.machine()
            var asked: [FirewallPolicy: [Endpoint]] = [.connecting: [endpoint(7)]]
            var kernel = Kernel.policy(.connecting, [endpoint(7)])
            for event in events {
                switch event {
                case .firewallCommitted(let policy) where policy == machine.requestedPolicy:
                    kernel = .policy(policy, asked[policy] ?? [])
                case .nameResolutionOpened where machine.namesBeingReresolved != nil:
                    kernel = .resolving
                case .firewallTampered:
                    kernel = .unknown
                default:
                    break
                }
                let wantedBefore = [State.tunnelConnecting, .tunnelUp, .degraded].contains(machine.state)
                let actions = machine.handle(event)
                let wanted = [State.tunnelConnecting, .tunnelUp, .degraded].contains(machine.state)
                for action in actions {
                    switch action {
                    case .applyFirewall(let policy):
                        asked[policy] = machine.pins?.endpoints ?? []
                    case .openNameResolution:
                        #expect(wantedBefore && wanted, "resolution opened in \(machine.state) after \(label(event))")
                    case .answerRemote(.modify(let address, let port)) where wanted && kernel != .unknown:
                        let pinned = Endpoint(address: address, port: port, transport: .udp)
                        guard case .policy(let policy, let endpoints) = kernel, policy.allowsTransport else {
                            Issue.record("\(address) handed out under \(kernel) after \(label(event))")
                            continue
                        }
                        #expect(endpoints.contains(pinned), "\(address) handed out under \(kernel) after \(label(event))")
                    default:
                        break
                    }
                }
            }
        }
    }
}
