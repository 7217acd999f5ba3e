import StateMachine
import Watchers

/// Turns what the watchers report into machine events, given the machine as it is (which
/// interfaces and addresses are its, which process is the tunnel's). Pure: no I/O, no clock.
public enum InputTranslator {
    public static func translate(_ input: Input, for machine: Machine) -> Translation {
        switch input {
        case .signal(let signal): translate(signal, for: machine)
        case .netlink(let event): translate(event, for: machine)
        case .nftables(let event): translate(event)
        case .tunnel(let translation): translation
        case .event(let event): Translation(events: [event])
        case .watchdog: Translation()
        }
    }

    static func translate(_ signal: SignalEvent, for machine: Machine) -> Translation {
        switch signal {
        case .terminate(let number):
            return Translation(events: [.shutdownRequested],
                               notes: [LogNote(.notice, "signal \(number): shutting down", immediate: true)])
        case .reload:
            return Translation(events: [.reloadRequested],
                               notes: [LogNote(.notice, machine.tunnelKind == .wireguard
                                   ? "SIGHUP: reloading the WireGuard configuration"
                                   : "SIGHUP: reloading the credentials and the OpenVPN configuration", immediate: true)])
        case .childExited(let pid, let status) where pid == machine.tunnelPID:
            return Translation(events: [.tunnelProcessExited(status)],
                               notes: [LogNote(.notice, "\(machine.tunnelKind == .wireguard ? "wireguard-go" : "OpenVPN") (pid \(pid)) \(status)", immediate: true)])
        case .childExited(let pid, let status):
            return Translation(notes: [LogNote(.debug, "reaped pid \(pid): \(status)", immediate: true)])
        }
    }

    static func translate(_ event: NetlinkEvent, for machine: Machine) -> Translation {
        guard let configuration = machine.configuration else { return Translation() }
        let tunnel = machine.tunnelInterface, wan = configuration.wanInterface
        switch event {
        case .address(let interface, _, let address, let added)
            where interface == configuration.lanInterface && address.address == configuration.gateway.address:
            return Translation(events: [added ? .lanAddressPresent : .lanAddressMissing])
        case .link(let name, _, let up) where name == tunnel:
            return Translation(events: [up ? .tunnelLinkUp : .tunnelLinkDown])
        case .linkRemoved(let name, _) where name == tunnel:
            return Translation(events: [.tunnelLinkDown])
        case .link(let name, _, let up) where name == wan:
            let notes = up == machine.wanLinkUp ? [] : [LogNote(.notice, "WAN \(name) is \(up ? "up" : "down")")]
            return Translation(events: [up ? .wanLinkUp : .wanLinkDown], notes: notes)
        case .linkRemoved(let name, _) where name == wan:
            return Translation(events: [.wanLinkDown], notes: [LogNote(.notice, "WAN \(name) was removed")])
        // The Kubernetes gateway's overlay: its link and its routes are vpnsup's.
        case .linkRemoved(let name, _) where name == configuration.lanInterface && configuration.overlay != nil:
            return Translation(events: [.overlayLinkLost], notes: [LogNote(.notice, "overlay link \(name) was removed")])
        case .link(let name, _, false) where name == configuration.lanInterface && configuration.overlay != nil:
            return Translation(events: [.overlayLinkLost])
        case .route(let destination, _, _, false) where configuration.overlay?.settings.podNetworks.contains(destination) == true:
            return Translation(events: [.overlayRouteMissing])
        default:
            return Translation()
        }
    }

    static func translate(_ event: NftablesEvent) -> Translation {
        switch event {
        case .changed(let transaction):
            return Translation(events: [.firewallTampered(transaction.description)])
        case .resync:
            // Our own commits never reach the monitor, so this was outside activity: the table is
            // read back rather than committed blindly.
            return Translation(events: [.firewallNotificationsLost])
        }
    }
}

/// OpenVPN's management channel in the machine's terms. Pure.
public enum OpenVPNTranslator {
    public static func translate(_ event: ManagementChannelEvent) -> Translation {
        switch event {
        case .connected:
            return Translation(events: [.tunnelControlConnected])
        case .disconnected:
            // OpenVPN (`--management-client`) ends when the connection goes: its exit follows.
            return Translation(notes: [LogNote(.info, "OpenVPN's management connection closed")])
        case .message(let message):
            return translate(message)
        case .refusedPeer(let peer, let reason):
            // Closed before it got a byte; the channel waits for OpenVPN. Nothing for the machine.
            let who = peer.map { "\($0)" } ?? "an unknown process"
            return Translation(notes: [LogNote(.warning, "management socket: refused a connection from \(who): \(reason)")])
        }
    }

    static func translate(_ message: ManagementMessage) -> Translation {
        switch message {
        case .hold:
            return Translation(events: [.tunnelHeld])
        case .passwordNeeded(let type) where type == "Auth":
            return Translation(events: [.credentialsRequested])
        case .passwordNeeded(let type):
            return Translation(notes: [LogNote(.error, "OpenVPN asks for a '\(type)' password, which vpnsup does not hold")])
        case .passwordVerificationFailed:
            return Translation(events: [.authenticationFailed])
        case .state(let record):
            let connected = record.state == .connected
            let report = TunnelReport(
                state: record.state.name, connected: connected,
                tunnelAddress: connected && !record.tunnelIPv4.isEmpty ? record.tunnelIPv4 : nil,
                remote: connected && !record.remoteAddress.isEmpty ? "\(record.remoteAddress):\(record.remotePort)" : nil)
            return Translation(events: [connected ? .tunnelConnected : .tunnelDisconnected("OpenVPN reports \(record.state.name)")],
                               notes: [LogNote(.info, "OpenVPN state \(record.state.name) \(record.detail)")],
                               report: report)
        case .remote(let host, let port, let proto):
            return Translation(events: [.remoteRequested(host: host, port: port, proto: proto)])
        case .byteCount:
            return Translation() // never asked for: the status reads tun0's counters from the kernel
        case .fatal(let text):
            return Translation(events: [.tunnelFatal(text)], notes: [LogNote(.error, "OpenVPN fatal: \(text)")])
        case .error(let text):
            return Translation(notes: [LogNote(.warning, "OpenVPN management error: \(text)")])
        case .malformed(let text):
            return Translation(notes: [LogNote(.warning, "unparseable management line: \(text.prefix(200))")])
        default:
            return Translation(notes: [LogNote(.trace, "management: \(message)")])
        }
    }
}
