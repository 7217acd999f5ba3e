import StateMachine
import Testing

/// The Machine with a WireGuard configuration: the order of commits around wireguard-go, what
/// the handshake evidence means for the states, and how a silent peer is recovered (its next
/// pinned address, then its name resolved again under the policy plus marked DNS).
@Suite("Machine: WireGuard")
struct WireGuardMachineTests {
    /// A machine driven by `events` from `.start`; returns it and the actions of the last event.
    static func drive(_ events: [Event], timings: Timings = .exact) -> (Machine, [Action]) {
        var machine = Machine(timings: timings)
        var last: [Action] = []
        for event in [.start] + events { last = machine.handle(event) }
        return (machine, last)
    }

    /// Three addresses for the peer's name: a round is three recoveries.
    static let threeAddresses = Event.namesResolved(
        addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 7), IPv4Address(198, 51, 100, 8), IPv4Address(198, 51, 100, 9)]],
        failures: [:])

    @Test func wireguardGoStartsUnderTheConnectingPolicyAndIsReleasedUnderIt() {
        var machine = Machine(timings: .exact)
        var actions: [Action] = []
        for event in Scenario.wgStarted.path.dropLast() { actions += machine.handle(event) }
        // The spawn follows the commit of the connecting policy, in that order.
        let commit = actions.firstIndex(of: .applyFirewall(.connecting))!
        let start = actions.firstIndex(of: .startTunnel)!
        #expect(commit < start)
        _ = machine.handle(.tunnelStarted(pid: 4242))
        // Its socket appears: the link is configured, the device released (the policy holds).
        #expect(machine.handle(.tunnelControlConnected) == [.watchTunnelState])
        #expect(machine.handle(.tunnelHeld) == [.releaseTunnel])
        let plan = machine.tunnelPlan!
        #expect(plan.tunnelInterface == "wg0")
        #expect(plan.asksForRemotes == false)
        #expect(plan.wireGuard == WireGuardPlan(file: CredentialsToken(generation: 1),
                                                endpoints: [serverKey: Endpoint(address: IPv4Address(192, 0, 2, 1), port: 51820, transport: .udp)],
                                                fwmark: Configuration.transportMark))
    }

    @Test func aHoldBeforeTheCommitWaitsForIt() {
        var machine = Machine(timings: .exact)
        for event in Scenario.wgStarted.path { _ = machine.handle(event) }
        // An outside flush: the policy is requested again; the socket appears meanwhile.
        #expect(machine.handle(tampered) == [.applyFirewall(.connecting)])
        _ = machine.handle(.tunnelControlConnected)
        #expect(machine.handle(.tunnelHeld) == [])
        #expect(machine.handle(.firewallCommitted(.connecting)) == [.releaseTunnel])
    }

    @Test func theRulesetsNameTheTunnelLinkTheEndpointAndTheFilesDNS() {
        let (machine, _) = Self.drive(Scenario.wgUp.path.dropFirst().map { $0 })
        let up = machine.ruleset(for: .up)!.nftText
        #expect(up.contains("oifname \"eth0\" meta mark 0x76706e01 ip daddr 192.0.2.1 udp dport 51820 accept"))
        #expect(up.contains("oifname \"wg0\" masquerade"))
        #expect(!up.contains("tun0"))
        // DNS is unset: the file's DNS is enforced.
        #expect(up.contains("dnat ip to 10.64.0.1"))
        #expect(machine.tunnelInterface == "wg0")
        #expect(machine.tunnelKind == .wireguard)
    }

    @Test func theFirstHandshakeIsTheConnectionAndTheLinkMakesItTunnelUp() {
        var (machine, _) = Self.drive(Scenario.wgConfigured.path.dropFirst().map { $0 })
        #expect(machine.wireGuardEvidence == .connecting)
        _ = machine.handle(handshakeLook)
        #expect(machine.handle(handshakeRead) == [.scheduleTimer(.handshakeLook, after: .seconds(180))])
        #expect(machine.state == .tunnelConnecting, "the link is not up yet")
        // Up: the DNS probe starts, asking the file's DNS (no DNS or PROBE_SERVER is set).
        #expect(machine.handle(.tunnelLinkUp) == [.ensureTunnelRoute, .applyFirewall(.up), .scheduleTimer(.probe, after: .seconds(10))])
        #expect(machine.state == .tunnelUp)
        #expect(machine.wireGuardEvidence == .up)
    }

    @Test func anOverdueHandshakeSaysWhyAndSetsThePeerAgain() {
        let (machine, actions) = Self.drive(Scenario.wgOverdue.path.dropFirst().map { $0 })
        #expect(machine.state == .tunnelConnecting)
        #expect(actions == [.reconnectTunnel, .scheduleTimer(.handshakeLook, after: .seconds(5))])
        #expect(machine.reason == "no handshake with peer BwcHBwcH… 30 s after configuring it (wrong key, server down or transport blocked?)")
    }

    /// A DNS probe's reconnect sets the same peers again: the monitor keeps counting from the
    /// first configuration, so the handshake is still found overdue (and the name resolved again).
    @Test func peersSetAgainWithoutAHandshakeKeepTheClock() {
        var (machine, _) = Self.drive(Scenario.wgConfigured.path.dropFirst().map { $0 })
        // 15 s in, the same peers again: no new round.
        #expect(machine.handle(.tunnelPeersConfigured(at: configuredAt + .seconds(15))) == [])
        _ = machine.handle(handshakeLook)
        let actions = machine.handle(peersRead(handshake: nil, sent: 0, at: .seconds(21)))
        #expect(actions.contains(.reconnectTunnel), "overdue 21 s after the first configuration: \(actions)")
    }

    /// Three pinned addresses: each recovery moves to the next; the fourth, a full round later,
    /// resolves the name again under the policy plus marked DNS, then pins what it found.
    @Test func aFullRoundOfAddressesThenTheNameResolvedAgain() {
        let named = [wireGuardLoadedWithHostNames, .nameResolutionOpened, Self.threeAddresses, .firewallCommitted(.lockdown),
                     .lanAddressPresent, .firewallCommitted(.connecting), .tunnelStarted(pid: 4242), .tunnelControlConnected,
                     .tunnelHeld]
        var (machine, _) = Self.drive([.firewallCommitted(.lockdown)] + named)
        func endpoint() -> IPv4Address? { machine.tunnelPlan?.wireGuard?.endpoints[serverKey]?.address }
        #expect(endpoint() == IPv4Address(198, 51, 100, 7))
        var at = configuredAt
        func overdueRound() -> [Action] {
            _ = machine.handle(.tunnelPeersConfigured(at: at))
            _ = machine.handle(handshakeLook)
            at += .seconds(30)
            return machine.handle(.tunnelPeersRead([WireGuardPeerSample(publicKey: serverKey, lastHandshake: nil, sentBytes: 0)], at: at))
        }
        #expect(overdueRound().contains(.reconnectTunnel))
        #expect(endpoint() == IPv4Address(198, 51, 100, 8))
        #expect(overdueRound().contains(.reconnectTunnel))
        #expect(endpoint() == IPv4Address(198, 51, 100, 9))
        // Every address tried: the name again.
        #expect(overdueRound().contains(.openNameResolution))
        #expect(machine.namesBeingReresolved == ["vpn.example.net"])
        let resolving = machine.resolvingRuleset!.nftText
        // The connecting policy plus marked DNS to the nameserver, in the output filter and egress.
        #expect(resolving.contains("oifname \"eth0\" meta mark 0x76706e01 ip daddr 198.51.100.7 udp dport 51820 accept"))
        #expect(resolving.components(separatedBy: "oifname \"eth0\" meta mark 0x76706e01 ip daddr 192.0.2.53 udp dport 53 accept").count == 3)
        #expect(resolving.contains("oifname \"eth0\" meta mark 0x76706e01 ip daddr 192.0.2.53 tcp dport 53 accept"))
        #expect(machine.handle(.nameResolutionOpened) == [.resolveNames(["vpn.example.net"])])
        // The server moved: the new address is pinned, committed, and only then configured.
        let moved = Event.namesResolved(addresses: ["vpn.example.net": [IPv4Address(203, 0, 113, 99)]], failures: [:])
        #expect(machine.handle(moved) == [.applyFirewall(.connecting)])
        #expect(machine.ruleset(for: .connecting)!.nftText.contains("ip daddr 203.0.113.99 udp dport 51820 accept"))
        #expect(machine.resolvingRuleset == .resolving(nameservers: [IPv4Address(192, 0, 2, 53)], wanInterface: "eth0",
                                                       mark: Configuration.transportMark), "no longer the policy plus DNS")
        #expect(machine.namesBeingReresolved == nil)
        #expect(machine.handle(.firewallCommitted(.connecting)) == [.releaseTunnel])
        #expect(endpoint() == IPv4Address(203, 0, 113, 99))
        #expect(machine.state == .tunnelConnecting)
    }

    @Test func aNameThatDoesNotResolveAgainKeepsItsAddresses() {
        var (machine, _) = Self.drive(Scenario.wgReresolving.path.dropFirst().map { $0 })
        let failed = Event.namesResolved(addresses: [:], failures: ["vpn.example.net": "no answer"])
        #expect(machine.handle(failed) == [.applyFirewall(.up)])
        #expect(machine.pins?.endpoints == [Endpoint(address: IPv4Address(198, 51, 100, 7), port: 51820, transport: .udp)])
    }

    @Test func resolutionThatCannotOpenSetsThePeerAgain() {
        var machine = Machine(timings: .exact)
        let path = Scenario.wgReresolving.path.dropLast()
        for event in path { _ = machine.handle(event) }
        #expect(machine.namesBeingReresolved == ["vpn.example.net"])
        #expect(machine.handle(.nameResolutionFailed("EPERM")) == [.reconnectTunnel])
        #expect(machine.namesBeingReresolved == nil)
    }

    @Test func shutdownWhileResolvingAgainCommitsTheLockdown() {
        var (machine, _) = Self.drive(Scenario.wgReresolving.path.dropFirst().map { $0 })
        let actions = machine.handle(.shutdownRequested)
        #expect(actions.first == .applyFirewall(.lockdown))
        #expect(actions.contains(.cancelTimer(.handshakeLook)))
        #expect(machine.namesBeingReresolved == nil)
        #expect(machine.handle(Self.threeAddresses) == [], "a late answer changes nothing")
    }

    @Test func aStaleHandshakeDegradesAndRecovers() {
        let (machine, actions) = Self.drive(Scenario.wgStale.path.dropFirst().map { $0 })
        #expect(machine.state == .degraded)
        #expect(machine.reason == "latest handshake with peer BwcHBwcH… 210 s ago while sending to it")
        #expect(actions == [.reconnectTunnel, .scheduleTimer(.handshakeLook, after: .seconds(5))])
    }

    /// SIGHUP with a new file: no restart of wireguard-go; the connecting policy with the new
    /// endpoint, then the device configured anew; TunnelUp again on the next handshake.
    @Test func aReloadReconfiguresTheRunningDevice() {
        var (machine, _) = Self.drive(Scenario.wgUp.path.dropFirst().map { $0 })
        let actions = machine.handle(wireGuardReloaded)
        #expect(actions == [.cancelTimer(.handshakeLook), .applyFirewall(.connecting)])
        #expect(!actions.contains(.stopTunnel))
        #expect(machine.state == .tunnelConnecting)
        #expect(machine.credentials == CredentialsToken(generation: 2))
        #expect(machine.ruleset(for: .connecting)!.nftText.contains("ip daddr 192.0.2.2 udp dport 51820 accept"))
        #expect(!machine.ruleset(for: .connecting)!.nftText.contains("ip daddr 192.0.2.1 "))
        #expect(machine.handle(.firewallCommitted(.connecting)) == [.releaseTunnel])
        #expect(machine.tunnelPlan?.wireGuard?.file == CredentialsToken(generation: 2))
        #expect(machine.handle(.tunnelPeersConfigured(at: configuredAt + .seconds(300))) == [.scheduleTimer(.handshakeLook, after: .milliseconds(100))])
        _ = machine.handle(handshakeLook)
        _ = machine.handle(peersRead(handshake: .seconds(301), sent: 1, at: .seconds(301)))
        #expect(machine.state == .tunnelUp)
    }

    @Test func anOpenVPNFileOnSIGHUPIsRefused() {
        var (machine, _) = Self.drive(Scenario.wgUp.path.dropFirst().map { $0 })
        let before = machine
        #expect(machine.judge(ReloadedConfiguration(remotes: [Remote(host: "192.0.2.1", port: 1194, transport: .udp)],
                                                    credentials: CredentialsToken(generation: 2)))
            == .refused("CONFIG=/config/wg0.conf is now an OpenVPN file; restart vpnsup to change the kind of tunnel"))
        #expect(machine.handle(reloaded) == [])
        #expect(machine == before)
    }

    @Test func theEndOfWireguardGoStopsTheEvidenceAndRespawnsIt() {
        var (machine, _) = Self.drive(Scenario.wgUp.path.dropFirst().map { $0 })
        let actions = machine.handle(exited)
        #expect(actions == [.forgetTunnelProcess, .applyFirewall(.connecting), .scheduleTimer(.crashWindow, after: .seconds(60)),
                            .scheduleTimer(.respawn, after: .milliseconds(250)), .cancelTimer(.handshakeLook)])
        #expect(machine.wireGuardEvidence == nil)
        #expect(machine.reason == "wireguard-go exited with status 1")
        #expect(machine.handle(handshakeLook) == [], "no look without the device")
    }

    @Test func aCrashLoopNamesWireguardGo() {
        var machine = Machine(timings: .exact)
        for event in Scenario.wgStarted.path { _ = machine.handle(event) }
        for pid: Int32 in 1...5 {
            _ = machine.handle(exited)
            if pid < 5 {
                _ = machine.handle(.timerFired(.respawn))
                _ = machine.handle(.tunnelStarted(pid: 5000 + pid))
            }
        }
        #expect(machine.state == .killswitched)
        #expect(machine.reason?.hasPrefix("crash loop: wireguard-go ended 5 times within") == true)
    }

    /// Without DNS or PROBE_SERVER, the probe asks the resolver the LAN is held to: the file's DNS.
    @Test func theProbeAsksTheFilesDNS() {
        let (machine, _) = Self.drive(Scenario.wgUp.path.dropFirst().map { $0 })
        #expect(machine.probeServer == IPv4Address(10, 64, 0, 1))
        #expect(machine.probeInterval == ProbeSettings.defaultInterval)
        var withServer = Machine(timings: .exact)
        let configured = try! Configuration(["CONFIG": "/config/wg0.conf", "IP_ADDR": "172.22.0.1/24", "PROBE_SERVER": "192.0.2.53"])
        for event in [Event.start, .firewallCommitted(.lockdown), .configurationLoaded(LoadedConfiguration(
            configuration: configured, remotes: literalPeerProfile.remotes, credentials: CredentialsToken(generation: 1),
            wireGuard: literalPeerProfile))] { _ = withServer.handle(event) }
        #expect(withServer.probeServer == IPv4Address(192, 0, 2, 53), "PROBE_SERVER wins")
    }

    @Test func openVPNsQuestionsMeanNothingToWireGuard() {
        for event in [Event.credentialsRequested, remoteAsked, .authenticationFailed] {
            var (machine, _) = Self.drive(Scenario.wgConfigured.path.dropFirst().map { $0 })
            let before = machine
            #expect(machine.handle(event) == [])
            #expect(machine == before)
        }
    }
}

@Suite("Ruleset: name resolution added to a policy")
struct ReresolvingRulesetTests {
    @Test func dnsToEachNameserverBeforeTheFinalDrops() {
        let up = Ruleset.build(.up, for: exampleLayout)
        let servers = [IPv4Address(192, 0, 2, 53), IPv4Address(127, 0, 0, 11), IPv4Address(192, 0, 2, 53)]
        let resolving = up.addingNameResolution(nameservers: servers, wanInterface: "eth0", mark: Configuration.transportMark)
        let dns = TransportProtocol.allCases.map { transport in
            Rule([.outputInterface("eth0"), .mark(Configuration.transportMark), .destinationAddress(IPv4Address(192, 0, 2, 53)),
                  .destinationPort(transport, 53)], .accept)
        }
        for hook in [Chain.Hook.output, .postrouting] {
            let before = up.chains.first { $0.kind == .filter && $0.hook == hook }!.rules
            let after = resolving.chains.first { $0.kind == .filter && $0.hook == hook }!.rules
            // Loopback's server gets no rule, the repeated one a pair only; the final drop stays last.
            #expect(after == Array(before.dropLast()) + dns + [before.last!], "\(hook)")
        }
        // Nothing else changes: the input, forward and NAT chains, the maps.
        for chain in up.chains where !(chain.kind == .filter && [.output, .postrouting].contains(chain.hook)) {
            #expect(resolving.chains.contains(chain))
        }
        #expect(resolving.maps == up.maps)
    }
}
