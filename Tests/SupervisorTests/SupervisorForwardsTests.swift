import StateMachine
@testable import Supervisor
import Testing

/// Live port forwards through the whole supervisor (interpreter, record, machine) and the
/// recording effects: a new reading of PORT_FWD_FILE, as the file watcher or SIGHUP delivers it.
@Suite("Supervisor scenarios: PORT_FWD_FILE changed live")
struct SupervisorForwardsTests {
    static let configuration = try! Configuration(["CONFIG": "/config/client.ovpn", "IP_ADDR": "172.22.0.1/24",
                                                   "LAN_IF": "eth1", "WAN_IF": "eth0",
                                                   "PORT_FWD": "8080:172.22.0.10:80/tcp",
                                                   "PORT_FWD_FILE": "/etc/vpnsup/forwards"])
        .addingPortForwards(fromFile: "9000:172.22.0.11:9000/udp\n8443:172.22.0.12:443/tcp\n")
    static let loaded = LoadedConfiguration(configuration: configuration,
                                            remotes: [Remote(host: "192.0.2.1", port: 1194, transport: .udp)],
                                            credentials: CredentialsToken(generation: 1))
    /// The file after an edit: 8443 gone, 9000 retargeted, 8444 new.
    static let edited = try! Configuration.portForwards("8080:172.22.0.10:80/tcp 9000:172.22.0.13:9000/udp 8444:172.22.0.12:443/tcp",
                                                        lan: configuration.gateway.network)

    private func world() -> World { World(load: .configurationLoaded(Self.loaded)) }

    private func read(_ world: World, _ reading: PortForwardReading) async {
        await world.event(.portForwardsRead(reading))
    }

    @Test func acceptedInTunnelUpIsAnElementChangeNotACommit() async throws {
        let world = world()
        await world.bringUp()
        #expect(await world.machine.state == .tunnelUp)
        #expect(world.status.portForwards == ["8080/tcp -> 172.22.0.10:80", "9000/udp -> 172.22.0.11:9000",
                                              "8443/tcp -> 172.22.0.12:443"])
        #expect(world.status.portForwardFile == "/etc/vpnsup/forwards")
        let before = await world.actions.count
        await read(world, .accepted(Self.edited))
        let diff = PortForwardDiff(from: Self.configuration.portForwards, to: Self.edited)
        #expect(await world.actions(since: before) == [.applyForwardChanges(diff)])
        // The effects were asked with the machine that knows the full set after the change.
        let asked = try #require(await world.performed.last { $0.action == .applyForwardChanges(diff) })
        #expect(asked.machine.forwardsBeingApplied == Self.edited)
        #expect(asked.machine.portForwards == Self.configuration.portForwards)
        // Reported applied: in force, in the status and for the next commit.
        let now = await world.machine
        #expect(now.portForwards == Self.edited)
        #expect(now.forwardsBeingApplied == nil)
        #expect(world.status.portForwards == Self.edited.map(\.description))
        #expect(world.status.forwardsChanges == 1)
        let last = try #require(world.status.lastForwardsChange)
        #expect(last.accepted)
        #expect(last.message.hasPrefix("3 forwards (2 removed, 2 added): applying them as map element changes, done in "), "\(last.message)")
        #expect(world.log.written.contains { $0.hasPrefix("notice /etc/vpnsup/forwards changed: 3 forwards (2 removed, 2 added)") })
        #expect(world.log.written.contains { $0.hasPrefix("notice applied 2 forward deletes and 2 adds to the maps in one transaction in ") })
        #expect(!(await world.actions(since: before)).contains(.applyFirewall(.up)))
        #expect(await world.machine.state == .tunnelUp)
    }

    @Test func acceptedWhileConnectingWaitsForTheUpCommit() async throws {
        let world = world()
        await world.start()
        await world.addressAppears()
        #expect(await world.machine.state == .tunnelConnecting)
        let before = await world.actions.count
        await read(world, .accepted(Self.edited))
        #expect(await world.actions(since: before) == [])
        #expect(world.status.lastForwardsChange?.message
                == "3 forwards (2 removed, 2 added): in force from the next up commit (the connecting ruleset holds no forwards)")
        #expect(world.status.portForwards == Self.edited.map(\.description))
        await world.management(.connected)
        await world.management(.hold("Waiting for hold release:0"))
        await world.openvpnState("CONNECTED", tunnel: "10.8.0.2", remote: "192.0.2.1", port: "1194")
        await world.tunnelLink(up: true)
        #expect(await world.machine.state == .tunnelUp)
        let commit = try #require(await world.performed.last { $0.action == .applyFirewall(.up) })
        let maps = try #require(commit.machine.ruleset(for: .up)).maps
        let mapped = Set(maps.flatMap { map in map.entries.map { "\($0.publicPort)/\(map.transport) -> \($0.target):\($0.targetPort)" } })
        #expect(mapped == Set(Self.edited.map(\.description)))
    }

    @Test func refusedKeepsTheForwardsAndSaysWhy() async throws {
        let world = world()
        await world.bringUp()
        let machine = await world.machine
        let before = await world.actions.count
        let why = "PORT_FWD_FILE=/etc/vpnsup/forwards:2 has '8081:10.0.0.5:81/tcp', which targets 10.0.0.5, outside the LAN 172.22.0.0/24"
        await read(world, .refused(why))
        #expect(await world.actions(since: before) == [])
        #expect(await world.machine == machine)
        #expect(world.status.lastForwardsChange == .init(at: world.status.lastForwardsChange?.at ?? "", accepted: false, message: why))
        #expect(world.status.portForwards?.count == 3)
        #expect(world.status.forwardsChanges == nil)
        #expect(world.log.written.contains("error PORT_FWD_FILE refused, the 3 forwards in force stay: \(why)"))
    }

    @Test func unchangedDoesNothing() async throws {
        let world = world()
        await world.bringUp()
        let before = await world.actions.count
        await read(world, .accepted(Self.configuration.portForwards))
        #expect(await world.actions(since: before) == [])
        #expect(world.status.lastForwardsChange?.accepted == true)
        #expect(world.status.lastForwardsChange?.message == "unchanged: 3 forwards")
        #expect(world.status.forwardsChanges == nil)
    }

    @Test func aFailedElementChangeFallsBackToAFullCommit() async throws {
        let world = world()
        await world.bringUp()
        await world.effects.script(failingForwardChanges: "add elements 1-1 of 1 to map tcp_forwards: File exists")
        let before = await world.actions.count
        await read(world, .accepted(Self.edited))
        let diff = PortForwardDiff(from: Self.configuration.portForwards, to: Self.edited)
        #expect(await world.actions(since: before) == [.applyForwardChanges(diff), .applyFirewall(.up)])
        let commit = try #require(await world.performed.last { $0.action == .applyFirewall(.up) })
        #expect(commit.machine.portForwards == Self.edited)
        #expect(await world.machine.state == .tunnelUp)
        #expect(world.status.portForwards == Self.edited.map(\.description))
        #expect(world.status.lastForwardsChange?.message.hasSuffix(
            "which failed: add elements 1-1 of 1 to map tcp_forwards: File exists; committing the whole up ruleset with them instead") == true)
        #expect(world.log.written.contains { $0.hasPrefix("warning the forward maps could not be changed in place") })
    }

    @Test func sighupReadsTheFileAgain() async throws {
        let world = world()
        await world.bringUp()
        let before = await world.actions.count
        await world.signal(.reload)
        #expect(await world.actions(since: before) == [.reloadConfiguration, .readPortForwardFile])
    }
}
