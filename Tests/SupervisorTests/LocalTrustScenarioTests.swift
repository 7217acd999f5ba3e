import StateMachine
@testable import Supervisor
import Testing
import Watchers

/// docs/security.md, "Local trust boundaries", as the whole supervisor lives them (recording
/// effects, no root): files read in the background never hold up the kill switch, the management
/// socket serves no one between two OpenVPNs, and the status forgets what a dead OpenVPN said.
@Suite("Supervisor scenarios: local trust boundaries")
struct LocalTrustScenarioTests {
    /// The configuration files are still being read (a FIFO, a hung file system: the loader's
    /// deadline has not passed) when someone flushes the ruleset: the lockdown is committed again
    /// at once, and the configuration is taken when it comes.
    @Test func anOutsideFlushWhileTheConfigurationIsReadIsRepairedFirst() async throws {
        let world = World()
        await world.effects.script(loadReportsLater: true)
        await world.start()
        #expect(await world.actions == [.applyFirewall(.lockdown), .loadConfiguration])
        #expect(await world.machine.isConfigured == false)

        await world.event(.firewallTampered("table inet vpnsup deleted by nft (pid 4242)"))
        #expect(await world.actions(since: 2) == [.applyFirewall(.lockdown)], "repaired while the load is pending")
        #expect(world.status.firewallRepairs == 1)
        #expect(await world.machine.isConfigured == false)

        // The files arrive: start-up goes on as usual.
        await world.event(.configurationLoaded(World.literal))
        #expect(await world.actions(since: 3) == [.ensureLANAddress, .ensurePolicyRouting])
        await world.addressAppears()
        #expect(await world.machine.state == .tunnelConnecting)
    }

    /// A file that cannot be read at start is the one line of exit 78, whenever it comes.
    @Test func aConfigurationFileRefusedLaterStillExits78WithItsLine() async throws {
        let world = World()
        await world.effects.script(loadReportsLater: true)
        await world.start()
        let line = "CREDENTIALS_FILE=/run/secrets/credentials cannot be read: not a regular file but a FIFO"
        await world.event(.configurationRejected(line))
        #expect(await world.actions(since: 2) == [.exit(code: 78, message: line)])
        #expect(await world.driver.exitCode == 78)
    }

    /// SIGHUP with a credentials file that never answers: while it is read, an outside flush is
    /// repaired at once, and a second SIGHUP waits for the first reading's outcome (so an older
    /// reading can never overtake a newer one), then reads the files again.
    @Test func aSighupReadingNeverHoldsUpARepairAndASecondSighupWaitsForIt() async throws {
        let world = World()
        await world.bringUp()
        #expect(await world.machine.state == .tunnelUp)
        await world.effects.script(loadReportsLater: false, reloadReportsLater: true)
        let before = await world.actions.count
        await world.signal(.reload)
        #expect(await world.actions(since: before) == [.reloadConfiguration])

        await world.event(.firewallTampered("table inet vpnsup flushed by nft (pid 4243)"))
        #expect(await world.actions(since: before + 1) == [.applyFirewall(.up)])
        #expect(world.status.firewallRepairs == 1)

        await world.signal(.reload)
        #expect(await world.actions(since: before + 2) == [], "the second SIGHUP waits for the reading under way")

        let refusal = "CREDENTIALS_FILE=/run/secrets/credentials cannot be read: no answer within 1.0 seconds (a hung file system?)"
        await world.event(.reloadRefused(refusal))
        #expect(await world.actions(since: before + 2) == [.reloadConfiguration], "then the files are read again")
        #expect(world.status.lastReload?.accepted == false)
        #expect(world.status.lastReload?.message == refusal)
        #expect(world.log.written.contains("error SIGHUP: reload refused, the configuration in use stays: \(refusal)"))
        #expect(await world.machine.state == .tunnelUp)

        await world.event(.configurationReloaded(ReloadedConfiguration(
            remotes: [Remote(host: "192.0.2.1", port: 1194, transport: .udp)], credentials: CredentialsToken(generation: 2))))
        #expect(await world.actions(since: before + 3) == [.applyFirewall(.connecting), .stopTunnel])
        #expect(await world.machine.credentials == CredentialsToken(generation: 2))
    }

    /// OpenVPN is reaped: the management socket is told to serve no one before anything else
    /// happens, so a client waiting for the respawn is refused; the next OpenVPN is started (and
    /// served) only after that.
    @Test func theManagementSocketServesNobodyBetweenTwoOpenVPNs() async throws {
        let world = World()
        await world.bringUp()
        let before = await world.actions.count
        await world.signal(.childExited(pid: 100, status: .exited(1)))
        let ended = await world.actions(since: before)
        #expect(ended.first == .forgetTunnelProcess, "\(ended.map(\.label))")
        #expect(!ended.contains(.startTunnel))

        // A root process that connected meanwhile is refused by the channel: a warning, nothing else.
        let machine = await world.machine
        await world.management(.refusedPeer(nil, reason: "no OpenVPN is expected (none is running)"))
        #expect(await world.machine == machine)
        #expect(await world.actions.count == before + ended.count)
        #expect(world.log.written.contains(
            "warning management socket: refused a connection from an unknown process: no OpenVPN is expected (none is running)"))

        await world.event(.timerFired(.respawn))
        let respawned = await world.actions(since: before + ended.count)
        #expect(respawned == [.startTunnel])
        #expect(await world.machine.tunnelPID == 101)
    }

    /// The status after OpenVPN dies: its state, the tunnel address, the remote and its pid are
    /// gone with it, and the next OpenVPN's appear once it reports them.
    @Test func theStatusForgetsWhatADeadOpenVPNSaid() async throws {
        let world = World()
        await world.bringUp()
        #expect(world.status.openvpnPID == 100)
        #expect(world.status.openvpnState == "CONNECTED")
        #expect(world.status.tunnelAddress == "10.8.0.2")
        #expect(world.status.remote == "192.0.2.1:1194")

        await world.signal(.childExited(pid: 100, status: .signaled(9)))
        #expect(world.status.state == "TunnelConnecting")
        #expect(world.status.openvpnPID == nil)
        #expect(world.status.openvpnState == nil)
        #expect(world.status.tunnelAddress == nil)
        #expect(world.status.remote == nil)

        await world.event(.timerFired(.respawn))
        #expect(world.status.openvpnPID == 101)
        #expect(world.status.openvpnState == nil, "the new OpenVPN has said nothing yet")
        await world.openvpnState("WAIT")
        #expect(world.status.openvpnState == "WAIT")
        #expect(world.status.tunnelAddress == nil)
        await world.openvpnState("CONNECTED", tunnel: "10.8.0.6", remote: "192.0.2.1", port: "1194")
        #expect(world.status.tunnelAddress == "10.8.0.6")
        // Reconnecting: the address no longer holds.
        await world.openvpnState("RECONNECTING")
        #expect(world.status.openvpnState == "RECONNECTING")
        #expect(world.status.tunnelAddress == nil)
        #expect(world.status.remote == nil)
    }
}
