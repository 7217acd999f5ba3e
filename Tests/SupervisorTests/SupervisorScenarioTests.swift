import StateMachine
@testable import Supervisor
import Testing
import Watchers

/// The whole supervisor (interpreter, translators, record, machine) through the recording
/// effects, scripted input by input, without root.
@Suite("Supervisor scenarios")
struct SupervisorScenarioTests {
    @Test func startUpWithAHostNameRemote() async throws {
        let world = World(load: .configurationLoaded(World.hostName))
        await world.start()
        // The lockdown first, then the configuration; its host name opens resolution.
        #expect(await world.actions == [.applyFirewall(.lockdown), .loadConfiguration, .openNameResolution,
                                        .resolveNames(["vpn.example.net"])])
        let opened = try #require(await world.performed.first { $0.action == .openNameResolution })
        let resolving = try #require(opened.machine.resolvingRuleset)
        #expect(resolving.nftText.contains("ip daddr 192.0.2.53 udp dport 53 accept"))
        #expect(await world.machine.state == .initial)
        #expect(await world.machine.isConfigured == false)

        // The resolver answers: the lockdown closes resolution, then the pins and the address.
        await world.event(.namesResolved(addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 7)]], failures: [:]))
        #expect(await world.actions(since: 4) == [.applyFirewall(.lockdown), .ensureLANAddress, .ensurePolicyRouting])
        #expect(await world.machine.pins?.endpoints == [Endpoint(address: IPv4Address(198, 51, 100, 7), port: 1194, transport: .udp)])
        #expect(world.status.resolvedRemotes == ["vpn.example.net": ["198.51.100.7"]])
        #expect(world.status.endpoints == ["198.51.100.7:1194/udp"])

        await world.addressAppears()
        await world.management(.connected)
        await world.management(.hold("Waiting for hold release:0"))
        await world.management(.remote(host: "vpn.example.net", port: 1194, proto: "udp"))
        let actions = await world.actions
        let connecting = try #require(actions.index(of: .applyFirewall(.connecting)))
        let start = try #require(actions.index(of: .startTunnel))
        let release = try #require(actions.index(of: .releaseTunnel))
        #expect(connecting < start && start < release, "\(actions.map(\.label))")
        // The connecting ruleset pins the resolved address; OpenVPN asks for its remote and is
        // given that address, since its own DNS would be dropped.
        let committed = try #require(await world.performed.first { $0.action == .applyFirewall(.connecting) })
        #expect(committed.machine.ruleset(for: .connecting)?.nftText.contains("ip daddr 198.51.100.7 udp dport 1194 accept") == true)
        let plan = try #require(await world.performed.first { $0.action == .startTunnel }?.machine.tunnelPlan)
        #expect(OpenVPNBackend().arguments(for: plan).contains("--management-query-remote"))
        #expect(actions.last == .answerRemote(.modify(IPv4Address(198, 51, 100, 7), port: 1194)))
        #expect(world.log.written.contains("info OpenVPN asks for remote vpn.example.net 1194 udp: remote MOD 198.51.100.7 1194"))

        await world.openvpnState("CONNECTED", tunnel: "10.8.0.2", remote: "198.51.100.7", port: "1194")
        await world.tunnelLink(up: true)
        #expect(await world.machine.state == .tunnelUp)
        #expect(world.status.state == "TunnelUp")
        #expect(world.status.remote == "198.51.100.7:1194")
        #expect(world.notifier.sent.filter { $0 == "READY=1" }.count == 1)
    }

    @Test func literalRemotesDoNotMakeOpenVPNAskForThem() async throws {
        let world = World()
        await world.bringUp()
        let plan = try #require(await world.performed.first { $0.action == .startTunnel }?.machine.tunnelPlan)
        #expect(!OpenVPNBackend().arguments(for: plan).contains("--management-query-remote"))
        #expect(!(await world.actions).contains(.openNameResolution))
    }

    @Test func openVPNCrashLoop() async throws {
        let world = World()
        await world.start()
        await world.addressAppears()
        #expect(await world.machine.tunnelPID == 100)
        // A child that is not OpenVPN is only reaped.
        await world.signal(.childExited(pid: 4711, status: .exited(0)))
        #expect(await world.machine.tunnelPID == 100)
        for pid: Int32 in 100...104 {
            let before = await world.actions.count
            await world.signal(.childExited(pid: pid, status: .exited(1)))
            let after = await world.actions(since: before)
            if pid < 104 {
                #expect(after.contains { if case .scheduleTimer(.respawn, _) = $0 { true } else { false } }, "\(after)")
                await world.event(.timerFired(.respawn))
                #expect(await world.machine.tunnelPID == pid + 1)
            } else {
                #expect(after == [.forgetTunnelProcess, .applyFirewall(.lockdown), .cancelTimer(.respawn), .cancelTimer(.crashWindow),
                                  .scheduleTimer(.retry, after: .seconds(10))])
            }
        }
        #expect(await world.machine.state == .killswitched)
        #expect(world.status.state == "Killswitched")
        #expect(world.status.reason == "crash loop: OpenVPN ended 5 times within 60.0 seconds without bringing the tunnel up")
        #expect(world.status.openvpnPID == nil)
        // The retry starts over from the address.
        await world.event(.timerFired(.retry))
        #expect(await world.machine.state == .tunnelConnecting)
        #expect(await world.machine.tunnelPID == 105)
    }

    @Test func sighupWithNewCredentials() async throws {
        let world = World()
        await world.bringUp()
        #expect(await world.machine.credentials == CredentialsToken(generation: 1))
        let renewed = CredentialsToken(generation: 2)
        await world.effects.script(reload: .configurationReloaded(ReloadedConfiguration(
            remotes: [Remote(host: "192.0.2.1", port: 1194, transport: .udp)], credentials: renewed)))
        let before = await world.actions.count
        await world.signal(.reload)
        #expect(await world.actions(since: before) == [.reloadConfiguration, .applyFirewall(.connecting), .stopTunnel])
        #expect(await world.machine.credentials == renewed)
        #expect(world.status.reloads == 1)
        #expect(world.status.lastReload?.accepted == true)
        // OpenVPN goes and starts again at once, and is given the new credentials.
        await world.signal(.childExited(pid: 100, status: .signaled(15)))
        #expect(await world.actions(since: before).suffix(3) == [.stopTunnel, .forgetTunnelProcess, .startTunnel])
        await world.management(.passwordNeeded(type: "Auth"))
        let sent = try #require(await world.performed.last { $0.action == .sendCredentials })
        #expect(sent.machine.credentials == renewed)

        // A reload naming a host that was not resolved at start is refused; nothing changes.
        await world.effects.script(reload: .configurationReloaded(ReloadedConfiguration(
            remotes: [Remote(host: "new.example.net", port: 1194, transport: .udp)], credentials: CredentialsToken(generation: 3))))
        let unchanged = await world.machine
        await world.signal(.reload)
        #expect(await world.machine == unchanged)
        #expect(world.status.lastReload?.accepted == false)
        #expect(world.status.lastReload?.message.contains("names host(s) not resolved at start (new.example.net)") == true)
        #expect(world.status.reloads == 1)
    }

    @Test func aManagementSendFailing() async throws {
        let world = World()
        await world.start()
        await world.addressAppears()
        await world.effects.script(failing: .release)
        await world.management(.connected)
        let before = await world.actions.count
        await world.management(.hold("Waiting for hold release:0"))
        // The hold could not be released: OpenVPN is stopped, and its end takes the usual way.
        #expect(await world.actions(since: before) == [.releaseTunnel, .stopTunnel])
        #expect(world.log.written.contains {
            $0.contains("management command release failed: OpenVPN is not connected to the management socket; stopping OpenVPN")
        })
        await world.signal(.childExited(pid: 100, status: .signaled(15)))
        #expect(await world.actions.suffix(2) == [.scheduleTimer(.crashWindow, after: .seconds(60)),
                                                  .scheduleTimer(.respawn, after: .milliseconds(250))])
        #expect(await world.machine.state == .tunnelConnecting)
    }

    @Test func shutdownWhileResolvingEndsWithTheLockdown() async throws {
        let world = World(load: .configurationLoaded(World.hostName))
        await world.start()
        #expect(await world.actions.last == .resolveNames(["vpn.example.net"]))
        await world.signal(.terminate(15))
        let actions = await world.actions
        #expect(actions.suffix(4) == [.applyFirewall(.lockdown), .cancelTimer(.respawn), .cancelTimer(.retry),
                                      .exit(code: 0, message: nil)])
        // The last commit before the exit is the lockdown, which replaces the resolving ruleset.
        let lastCommit = try #require(await world.performed.last { if case .applyFirewall = $0.action { true } else { false } })
        #expect(lastCommit.machine.ruleset(for: .lockdown) == .lockdown)
        #expect(await world.driver.exitCode == 0)
        #expect(world.notifier.sent.last == "STOPPING=1")
        // The resolver's late answer finds nobody.
        await world.event(.namesResolved(addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 7)]], failures: [:]))
        #expect(await world.actions.count == actions.count)
    }

    @Test func outsideFlushRepaired() async throws {
        let world = World()
        await world.bringUp()
        let flush = NftablesTransaction(table: "inet vpnsup", changes: [NftablesChange(.table, added: false)], portID: 4242,
                                        processID: 4242, processName: "nft")
        let before = await world.actions.count
        await world.post(.nftables(.changed(flush)))
        #expect(await world.actions(since: before) == [.applyFirewall(.up)])
        #expect(await world.machine.state == .tunnelUp)
        #expect(world.status.firewallRepairs == 1)
        #expect(world.status.lastRepair?.change == flush.description)
        #expect(world.status.lastRepair?.policy == "up")
        #expect(world.log.written.contains { $0.hasPrefix("notice repaired table inet vpnsup: re-committed the up ruleset in ") && $0.hasSuffix("(repair 1)") })
        // Lost notifications: the table is read back, and repaired only if it differs.
        await world.post(.nftables(.resync))
        #expect(await world.actions.last == .verifyFirewall(.up))
        #expect(world.status.firewallRepairs == 1)
        await world.effects.script { _ in .firewallTampered("table inet vpnsup: notifications were lost and it no longer matches") }
        await world.post(.nftables(.resync))
        #expect(await world.actions.suffix(2) == [.verifyFirewall(.up), .applyFirewall(.up)])
        #expect(world.status.firewallRepairs == 2)
    }

    @Test func wrongPassword() async throws {
        let world = World()
        await world.start()
        await world.addressAppears()
        await world.management(.connected)
        await world.management(.hold("Waiting for hold release:0"))
        await world.management(.passwordNeeded(type: "Auth"))
        let before = await world.actions.count
        await world.management(.passwordVerificationFailed(type: "Auth"))
        #expect(await world.actions(since: before) == [.applyFirewall(.lockdown), .cancelTimer(.respawn), .stopTunnel])
        #expect(world.status.state == "Killswitched")
        #expect(world.status.reason == "authentication failed: the server rejected the credentials")
        // OpenVPN ends; nothing retries with the rejected credentials.
        await world.signal(.childExited(pid: 100, status: .exited(1)))
        await world.event(.timerFired(.retry))
        await world.event(.timerFired(.respawn))
        let after = await world.actions(since: before)
        #expect(!after.contains(.startTunnel))
        #expect(!after.contains(.sendCredentials))
        #expect(await world.machine.state == .killswitched)
    }

    @Test func aBadConfigurationGetsStderrToItself() async throws {
        let world = World(load: .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"))
        await world.start()
        #expect(await world.actions == [.applyFirewall(.lockdown), .loadConfiguration,
                                        .exit(code: 78, message: "IP_ADDR=garbage is not an IPv4 address with prefix length")])
        #expect(await world.driver.exitCode == 78)
        // The lockdown's commit was logged, but held back: the configuration was never accepted.
        #expect(world.log.written.isEmpty, "\(world.log.written)")
    }

    @Test func heldLinesAreWrittenOnceTheConfigurationIsAccepted() async throws {
        let world = World()
        await world.start()
        #expect(world.log.written.first == "info committed the lockdown ruleset")
        #expect(world.log.written.contains("info no DNS probe: neither DNS nor PROBE_SERVER names a resolver to ask through the tunnel"))
    }

    @Test func aMissingInterfaceExits78NamingIt() async throws {
        let world = World(load: .interfaceMissing(variable: "WAN_IF", name: "nosuch0"))
        await world.start()
        #expect(await world.actions.last == .exit(code: 78, message: "WAN_IF=nosuch0 names no interface in this network namespace"))
    }

    @Test func sigtermWhileUpStopsOpenVPNThenExits() async throws {
        let world = World()
        await world.bringUp()
        await world.signal(.terminate(15))
        #expect(await world.actions.suffix(5) == [.applyFirewall(.lockdown), .cancelTimer(.respawn), .cancelTimer(.retry),
                                                  .stopTunnel, .scheduleTimer(.stopDeadline, after: .milliseconds(1500))])
        #expect(await world.driver.exitCode == nil)
        await world.event(.timerFired(.stopDeadline))
        #expect(await world.actions.last == .killTunnel)
        await world.signal(.childExited(pid: 100, status: .signaled(9)))
        #expect(await world.actions.last == .exit(code: 0, message: nil))
        #expect(await world.driver.exitCode == 0)
        #expect(world.log.written.contains("notice signal 15: shutting down"))
    }

    @Test func tunnelDeletedFromOutside() async throws {
        let world = World()
        await world.bringUp()
        let before = await world.actions.count
        await world.netlink(.linkRemoved(name: "tun0", index: 9))
        #expect(await world.actions(since: before) == [.reconnectTunnel])
        #expect(world.status.state == "Degraded")
        #expect(world.status.reconnects == 1)
        await world.tunnelLink(up: true)
        #expect(await world.actions.last == .ensureTunnelRoute)
        #expect(world.status.state == "TunnelUp")
    }
}
