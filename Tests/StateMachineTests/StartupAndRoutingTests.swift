import StateMachine
import Testing

// What moved into the machine from the driver: name resolution at start-up, the pins and the
// answers to OpenVPN's questions about remotes, policy routing, reloads judged against the pins,
// failed management commands, lost nftables notifications.

private let twoAddresses = Event.namesResolved(
    addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 7), IPv4Address(198, 51, 100, 8)]], failures: [:])

@Suite("Start-up: name resolution")
struct NameResolutionTests {
    @Test func resolutionOpensOnlyOverTheLockdownAndClosesWithIt() {
        var machine = Machine(timings: .exact)
        #expect(feed(&machine, [.start, loadedWithHostNames]) == [.applyFirewall(.lockdown), .loadConfiguration])
        // The configuration came first: resolution waits for the lockdown's commit.
        #expect(machine.handle(.firewallCommitted(.lockdown)) == [.openNameResolution])
        #expect(machine.resolvingRuleset?.nftText.contains("oifname \"eth0\" meta mark 0x76706e01 ip daddr 192.0.2.53 udp dport 53 accept") == true)
        #expect(machine.handle(.nameResolutionOpened) == [.resolveNames(["vpn.example.net"])])
        #expect(machine.namesBeingResolved == ["vpn.example.net"])
        #expect(!machine.isConfigured)
        // Nothing touches the LAN before the configuration is judged.
        #expect(machine.handle(.lanAddressMissing) == [])
        #expect(machine.handle(resolved) == [.applyFirewall(.lockdown)])
        #expect(!machine.isConfigured)
        #expect(machine.handle(.firewallCommitted(.lockdown)) == [.ensureLANAddress])
        #expect(machine.isConfigured)
        #expect(machine.pins?.endpoints == [Endpoint(address: IPv4Address(198, 51, 100, 7), port: 1194, transport: .udp)])
        #expect(machine.ruleset(for: .connecting)?.nftText.contains("ip daddr 198.51.100.7 udp dport 1194 accept") == true)
        #expect(machine.tunnelPlan?.asksForRemotes == true)
        #expect(machine.state == .initial)
    }

    @Test func anAddressReportedWhileResolvingIsNotLost() {
        var machine = Scenario.resolving.machine()
        _ = feed(&machine, [.lanAddressPresent, resolved])
        // Accepted with the address already there and the lockdown committed: AddressAssigned.
        #expect(machine.handle(.firewallCommitted(.lockdown)) == [.ensureLANAddress, .applyFirewall(.connecting)])
        #expect(machine.state == .addressAssigned)
    }

    @Test func namesThatDoNotResolveAreSkippedIfAnotherRemoteIsLeft() {
        var machine = Machine(timings: .exact)
        let mixed = LoadedConfiguration(configuration: exampleConfiguration,
                                        remotes: [Remote(host: "vpn.invalid", port: 1194, transport: .udp),
                                                  Remote(host: "192.0.2.1", port: 443, transport: .tcp)],
                                        credentials: CredentialsToken(generation: 1))
        _ = feed(&machine, [.start, .firewallCommitted(.lockdown), .configurationLoaded(mixed), .nameResolutionOpened,
                            .namesResolved(addresses: [:], failures: ["vpn.invalid": "NXDOMAIN"])])
        #expect(machine.handle(.firewallCommitted(.lockdown)) == [.ensureLANAddress])
        #expect(machine.pins?.endpoints == [Endpoint(address: IPv4Address(192, 0, 2, 1), port: 443, transport: .tcp)])
    }

    @Test func noRemoteLeftExits78NamingEachName() {
        var machine = Scenario.resolving.machine()
        _ = machine.handle(.namesResolved(addresses: [:], failures: ["vpn.example.net": "192.0.2.53: connect: Network is unreachable"]))
        #expect(machine.handle(.firewallCommitted(.lockdown))
                == [.exit(code: 78, message: "CONFIG=/config/client.ovpn has no remote that resolves to an IPv4 address: "
                    + "vpn.example.net (192.0.2.53: connect: Network is unreachable)")])
    }

    @Test func aLiteralIPv6RemoteAloneExits78() {
        var machine = Machine(timings: .exact)
        let ipv6 = LoadedConfiguration(configuration: exampleConfiguration, remotes: [Remote(host: "2001:db8::1", port: 1194, transport: .udp)],
                                       credentials: CredentialsToken(generation: 1))
        _ = feed(&machine, [.start, .firewallCommitted(.lockdown)])
        #expect(machine.handle(.configurationLoaded(ipv6))
                == [.exit(code: 78, message: "CONFIG=/config/client.ovpn has no remote given as an IPv4 address or a host name: 2001:db8::1")])
    }

    @Test func aRepairDuringResolutionRecommitsTheLockdown() {
        var machine = Scenario.resolving.machine()
        #expect(machine.handle(tampered) == [.applyFirewall(.lockdown)])
        #expect(machine.handle(.firewallCommitted(.lockdown)) == [])
        // The resolver still answers, and resolution is closed as ever.
        #expect(machine.handle(resolved) == [.applyFirewall(.lockdown)])
        #expect(machine.handle(.firewallCommitted(.lockdown)) == [.ensureLANAddress])
    }

    @Test(arguments: [Scenario.resolutionOpening, .resolving, .closingResolution])
    func shutdownWhileResolvingCommitsTheLockdownBeforeTheExit(_ scenario: Scenario) {
        var machine = scenario.machine()
        #expect(machine.handle(.shutdownRequested)
                == [.applyFirewall(.lockdown), .cancelTimer(.respawn), .cancelTimer(.retry), .exit(code: 0, message: nil)])
        #expect(machine.handle(resolved) == [])
        #expect(machine.handle(.nameResolutionOpened) == [])
    }
}

@Suite("Remotes, routing and the tunnel's control channel")
struct TunnelControlTests {
    @Test func remoteAnswersRotateOverThePinnedAddresses() {
        var pinned = Scenario.resolving.machine()
        _ = feed(&pinned, [twoAddresses, .firewallCommitted(.lockdown), .lanAddressPresent, .firewallCommitted(.connecting), started])
        let ask = Event.remoteRequested(host: "vpn.example.net", port: 1194, proto: "udp")
        #expect(pinned.handle(ask) == [.answerRemote(.modify(IPv4Address(198, 51, 100, 7), port: 1194))])
        #expect(pinned.handle(ask) == [.answerRemote(.modify(IPv4Address(198, 51, 100, 8), port: 1194))])
        // (It connected: the round starts again, and the rotation goes on.)
        _ = pinned.handle(.tunnelConnected)
        #expect(pinned.handle(ask) == [.answerRemote(.modify(IPv4Address(198, 51, 100, 7), port: 1194))])
        // A remote that is not pinned is skipped: the kill switch would drop it anyway.
        #expect(pinned.handle(.remoteRequested(host: "192.0.2.99", port: 1194, proto: "udp")) == [.answerRemote(.skip)])
    }

    @Test func policyRoutingFollowsTheAddressAndTheTunnelRouteFollowsTun0() {
        var machine = Scenario.initial.machine()
        #expect(machine.handle(.lanAddressConfigured) == [.ensurePolicyRouting])
        // tun0 is not up (nor wanted) yet: no tunnel route.
        #expect(machine.handle(.policyRoutingInstalled) == [])
        var up = Scenario.tunnelUp.machine()
        #expect(up.handle(.policyRoutingInstalled) == [.ensureTunnelRoute])
        // Failures are the log's: the nftables kill switch still stands.
        #expect(up.handle(.policyRoutingFailed("EPERM")) == [])
        #expect(up.handle(.tunnelRouteFailed("ENETDOWN")) == [])
        #expect(up.state == .tunnelUp)
        // Before the configuration is judged nothing is routed.
        var starting = Scenario.starting.machine()
        #expect(starting.handle(.lanAddressConfigured) == [])
    }

    @Test func aFailedCommandStopsTheTunnelWhichThenRespawns() {
        var machine = Scenario.tunnelConnecting.machine()
        #expect(machine.handle(.tunnelCommandFailed(.watchState, "EPIPE")) == [.stopTunnel])
        #expect(machine.handle(exited) == [.forgetTunnelProcess, .scheduleTimer(.crashWindow, after: .seconds(60)),
                                           .scheduleTimer(.respawn, after: .milliseconds(250))])
        // Without a tunnel process, a late failure changes nothing.
        #expect(machine.handle(.tunnelCommandFailed(.release, "EPIPE")) == [])
        var up = Scenario.tunnelUp.machine()
        #expect(up.handle(.tunnelCommandFailed(.reconnect, "EPIPE")) == [.stopTunnel])
        #expect(up.handle(exited) == [.forgetTunnelProcess, .applyFirewall(.connecting), .scheduleTimer(.crashWindow, after: .seconds(60)),
                                      .scheduleTimer(.respawn, after: .milliseconds(250))])
    }

    @Test func lostNotificationsAreReadBackBeforeAnyRepair() {
        var machine = Scenario.tunnelUp.machine()
        #expect(machine.handle(.firewallNotificationsLost) == [.verifyFirewall(.up)])
        #expect(machine.handle(.firewallIntact(.up)) == [])
        #expect(machine.handle(.firewallTampered("table inet vpnsup: notifications were lost and it no longer matches")) == [.applyFirewall(.up)])
    }

    @Test func theTunnelsProcessIsTheMachines() {
        var machine = Scenario.addressAssigned.machine()
        #expect(machine.tunnelPID == nil)
        _ = feed(&machine, [.firewallCommitted(.connecting), .tunnelStarted(pid: 4242)])
        #expect(machine.tunnelPID == 4242)
        _ = machine.handle(exited)
        #expect(machine.tunnelPID == nil)
    }
}

@Suite("SIGHUP: reloads judged against the pins")
struct ReloadJudgementTests {
    @Test func newCredentialsAreUsedOnlyOnceAccepted() {
        var machine = Scenario.tunnelUp.machine()
        #expect(machine.credentials == CredentialsToken(generation: 1))
        _ = machine.handle(reloaded)
        #expect(machine.credentials == CredentialsToken(generation: 2))
        #expect(machine.pins?.endpoints == [Endpoint(address: IPv4Address(192, 0, 2, 2), port: 1194, transport: .udp)])
    }

    @Test func aHostNameNotResolvedAtStartIsRefused() {
        let machine = Scenario.tunnelUp.machine()
        let newName = ReloadedConfiguration(remotes: [Remote(host: "other.example.net", port: 1194, transport: .udp)],
                                            credentials: CredentialsToken(generation: 2))
        #expect(machine.judge(newName) == .refused("CONFIG=/config/client.ovpn names host(s) not resolved at start "
            + "(other.example.net); restart vpnsup to pin new host names"))
        var copy = machine
        #expect(copy.handle(.configurationReloaded(newName)) == [])
        #expect(copy == machine)
    }

    @Test func aNameResolvedAtStartIsFoundWhateverItsCase() {
        var machine = Scenario.closingResolution.machine()
        _ = machine.handle(.firewallCommitted(.lockdown))
        let sameName = ReloadedConfiguration(remotes: [Remote(host: "VPN.Example.NET.", port: 1194, transport: .udp)],
                                             credentials: CredentialsToken(generation: 2))
        guard case .accepted(let pins) = machine.judge(sameName) else {
            Issue.record("refused: \(machine.judge(sameName))")
            return
        }
        #expect(pins.endpoints == [Endpoint(address: IPv4Address(198, 51, 100, 7), port: 1194, transport: .udp)])
    }

    @Test func aReloadWithoutAnIPv4RemoteIsRefused() {
        let machine = Scenario.tunnelUp.machine()
        let ipv6 = ReloadedConfiguration(remotes: [Remote(host: "2001:db8::1", port: 1194, transport: .udp)],
                                         credentials: CredentialsToken(generation: 2))
        #expect(machine.judge(ipv6) == .refused("CONFIG=/config/client.ovpn has no remote with an IPv4 address"))
    }

    /// Accepted while Killswitched with the LAN address missing: the machine used to stay
    /// Killswitched for good once the address came back (neither the address nor a timer left it).
    @Test func anAcceptedReloadWithoutTheAddressLeavesOnceItReturns() {
        var machine = Scenario.killswitched.machine()
        _ = machine.handle(.lanAddressMissing)
        #expect(machine.handle(reloaded) == [.cancelTimer(.retry), .ensureLANAddress, .applyFirewall(.lockdown)])
        _ = machine.handle(.firewallCommitted(.lockdown))
        #expect(machine.handle(.lanAddressPresent) == [.applyFirewall(.connecting)])
        #expect(machine.state == .addressAssigned)
    }
}

@Suite("The DNS probe's settings")
struct ProbeSettingsTests {
    @Test func theConfigurationSetsTheProbeUnlessTheTimingsDo() throws {
        let probing = try Configuration(["CONFIG": "/config/client.ovpn", "IP_ADDR": "172.22.0.1/24", "DNS": "10.8.0.1",
                                         "PROBE_INTERVAL": "7", "PROBE_FAILURES": "2"])
        let loaded = Event.configurationLoaded(LoadedConfiguration(configuration: probing, remotes: literalRemotes.remotes,
                                                                   credentials: CredentialsToken(generation: 1)))
        var machine = Machine(timings: .exact)
        _ = feed(&machine, [.start, .firewallCommitted(.lockdown), loaded])
        #expect(machine.probeInterval == .seconds(7))
        var overridden = Machine(timings: Timings(jitter: 0, probeInterval: .seconds(10)))
        _ = feed(&overridden, [.start, .firewallCommitted(.lockdown), loaded])
        #expect(overridden.probeInterval == .seconds(10))
        // Two failures in a row are the configuration's limit.
        _ = feed(&machine, [.lanAddressPresent, .firewallCommitted(.connecting), started, .tunnelConnected, .tunnelLinkUp,
                            .firewallCommitted(.up)])
        #expect(machine.state == .tunnelUp)
        #expect(machine.handle(.probeFailed("timeout")) == [])
        #expect(machine.handle(.probeFailed("timeout")) == [.reconnectTunnel])
        #expect(machine.state == .degraded)
        #expect(machine.probeFailures == 2)
    }
}
