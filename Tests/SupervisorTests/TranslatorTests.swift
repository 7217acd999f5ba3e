import StateMachine
@testable import Supervisor
import Testing
import Watchers

/// The translators are pure: watcher reports in, machine events (and log lines) out.
@Suite("Translators")
struct TranslatorTests {
    /// A machine with the example configuration loaded and OpenVPN running as pid 100.
    static func running() -> Machine {
        var machine = Machine(timings: Timings(jitter: 0))
        for event: Event in [.start, .firewallCommitted(.lockdown), .configurationLoaded(World.literal), .lanAddressPresent,
                             .firewallCommitted(.connecting), .tunnelStarted(pid: 100)] {
            _ = machine.handle(event)
        }
        return machine
    }

    static let gateway = IPv4Interface("172.22.0.1/24")!

    @Test func netlinkReportsNeedTheConfiguration() {
        let fresh = Machine()
        #expect(InputTranslator.translate(.netlink(.address(interface: "eth1", index: 3, address: Self.gateway, added: true)),
                                          for: fresh).events == [])
    }

    @Test func netlinkReportsAboutTheRoutersInterfaces() {
        let machine = Self.running()
        func events(_ event: NetlinkEvent) -> [Event] { InputTranslator.translate(.netlink(event), for: machine).events }
        #expect(events(.address(interface: "eth1", index: 3, address: Self.gateway, added: true)) == [.lanAddressPresent])
        #expect(events(.address(interface: "eth1", index: 3, address: Self.gateway, added: false)) == [.lanAddressMissing])
        // Another address, or the gateway's address on another interface, is not the LAN's.
        #expect(events(.address(interface: "eth1", index: 3, address: IPv4Interface("172.22.0.9/24")!, added: true)) == [])
        #expect(events(.address(interface: "eth0", index: 2, address: Self.gateway, added: true)) == [])
        #expect(events(.link(name: "tun0", index: 9, up: true)) == [.tunnelLinkUp])
        #expect(events(.link(name: "tun0", index: 9, up: false)) == [.tunnelLinkDown])
        #expect(events(.linkRemoved(name: "tun0", index: 9)) == [.tunnelLinkDown])
        #expect(events(.link(name: "eth0", index: 2, up: false)) == [.wanLinkDown])
        #expect(events(.linkRemoved(name: "eth0", index: 2)) == [.wanLinkDown])
        #expect(events(.link(name: "eth7", index: 7, up: false)) == [])
        #expect(events(.synchronized) == [])
    }

    @Test func theWANsStateIsLoggedWhenItChanges() {
        let machine = Self.running() // the WAN is up, as far as the machine knows
        #expect(InputTranslator.translate(.netlink(.link(name: "eth0", index: 2, up: true)), for: machine).notes == [])
        #expect(InputTranslator.translate(.netlink(.link(name: "eth0", index: 2, up: false)), for: machine).notes
                == [LogNote(.notice, "WAN eth0 is down")])
    }

    @Test func onlyTheTunnelsProcessEndingIsAnEvent() {
        let machine = Self.running()
        #expect(InputTranslator.translate(.signal(.childExited(pid: 100, status: .exited(1))), for: machine).events
                == [.tunnelProcessExited(.exited(1))])
        #expect(InputTranslator.translate(.signal(.childExited(pid: 101, status: .exited(1))), for: machine).events == [])
        #expect(InputTranslator.translate(.signal(.terminate(15)), for: machine).events == [.shutdownRequested])
        #expect(InputTranslator.translate(.signal(.reload), for: machine).events == [.reloadRequested])
    }

    @Test func nftablesReports() {
        let change = NftablesTransaction(table: "inet vpnsup", changes: [NftablesChange(.rule, added: false, chain: "forward", handle: 7)],
                                         portID: 1, processID: 4242, processName: "nft")
        #expect(InputTranslator.translate(.nftables(.changed(change)), for: Machine()).events == [.firewallTampered(change.description)])
        #expect(InputTranslator.translate(.nftables(.resync), for: Machine()).events == [.firewallNotificationsLost])
    }

    @Test func openVPNsManagementMessages() {
        func events(_ message: ManagementMessage) -> [Event] { OpenVPNTranslator.translate(.message(message)).events }
        #expect(OpenVPNTranslator.translate(.connected).events == [.tunnelControlConnected])
        #expect(OpenVPNTranslator.translate(.disconnected).events == [])
        #expect(events(.hold("Waiting for hold release:0")) == [.tunnelHeld])
        #expect(events(.passwordNeeded(type: "Auth")) == [.credentialsRequested])
        #expect(events(.passwordNeeded(type: "Private Key")) == [])
        #expect(events(.passwordVerificationFailed(type: "Auth")) == [.authenticationFailed])
        #expect(events(.fatal("cannot allocate TUN/TAP dev dynamically")) == [.tunnelFatal("cannot allocate TUN/TAP dev dynamically")])
        #expect(events(.remote(host: "vpn.example.net", port: 1194, proto: "udp"))
                == [.remoteRequested(host: "vpn.example.net", port: 1194, proto: "udp")])
        #expect(events(.byteCount(received: 1, sent: 2)) == [])
        #expect(events(.error("unknown command")) == [])
    }

    @Test func openVPNsStates() {
        let connected = OpenVPNTranslator.translate(.message(.state(StateRecord(
            time: 1, state: .connected, detail: "SUCCESS", tunnelIPv4: "10.8.0.2", remoteAddress: "192.0.2.1", remotePort: "1194"))))
        #expect(connected.events == [.tunnelConnected])
        #expect(connected.report == TunnelReport(state: "CONNECTED", connected: true, tunnelAddress: "10.8.0.2", remote: "192.0.2.1:1194"))
        let reconnecting = OpenVPNTranslator.translate(.message(.state(StateRecord(time: 2, state: .reconnecting, detail: "ping-restart"))))
        #expect(reconnecting.events == [.tunnelDisconnected("OpenVPN reports RECONNECTING")])
        #expect(reconnecting.report == TunnelReport(state: "RECONNECTING", connected: false))
    }

    @Test func openVPNsManagementCommands() throws {
        let credentials = try Credentials(fileContents: "user\npa\"ss\n", path: "/run/secrets/x")
        #expect(try OpenVPNBackend.lines(for: .release, credentials: nil) == ["hold release"])
        #expect(try OpenVPNBackend.lines(for: .watchState, credentials: nil) == ["state on all"])
        #expect(try OpenVPNBackend.lines(for: .reconnect, credentials: nil) == ["signal SIGUSR1"])
        #expect(try OpenVPNBackend.lines(for: .answerRemote(.skip), credentials: nil) == ["remote SKIP"])
        #expect(try OpenVPNBackend.lines(for: .sendCredentials, credentials: credentials)
                == ["username \"Auth\" \"user\"", "password \"Auth\" \"pa\\\"ss\""])
        #expect(throws: (any Error).self) { try OpenVPNBackend.lines(for: .sendCredentials, credentials: nil) }
    }
}
