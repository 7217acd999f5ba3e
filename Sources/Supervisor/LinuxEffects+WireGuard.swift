import Actions
import FoundationEssentials
import StateMachine
import Watchers

// The effects particular to WireGuard: claiming TUNNEL_IF's socket, the router's own traffic, the
// kernel plane's probe, and reading the peers' handshakes when the machine asks. The wg-quick
// file is read with the other files (`ConfigurationFiles`).
extension LinuxEffects {
    /// TUNNEL_IF's UAPI socket, before anything runs: a stale one (a killed wireguard-go's) is
    /// removed, a live one refused, since its device is another router's (the socket directory is
    /// shared by every network namespace), or a wireguard-go an earlier vpnsup left running. The
    /// message, or nil when the name is free.
    func claimWireGuardSocket(_ interface: String) -> String? {
        do {
            try WireGuardGo.claimSocket(interface: interface)
            return nil
        } catch {
            return "TUNNEL_IF=\(interface): \(error)"
        }
    }

    /// The router's own traffic into the tunnel (or nowhere), as OpenVPN's pushed routes send it:
    /// the rules after the LAN's (`AddressConfigurator.ensureUnmarkedRule`).
    func ensureRouterTrafficRules() throws {
        try addresses.ensureMainTableWithoutDefault(priority: Configuration.routingRulePriority + 1)
        try addresses.ensureUnmarkedRule(mark: Configuration.transportMark, table: Configuration.routingTable,
                                         priority: Configuration.routingRulePriority + 2)
    }

    /// Whether this kernel has the `wireguard` link type, for the status (vpnsup runs
    /// wireguard-go either way: the kernel plane is not driven yet). nil: the probe failed.
    func probeKernelPlane() -> Bool? {
        do {
            let available = try WireGuardLink.kernelSupportsWireGuard(probingWith: "vpnsup-wgprobe")
            log.log(.info, available
                ? "this kernel has the wireguard link type; vpnsup runs the userspace plane (wireguard-go) all the same"
                : "this kernel has no wireguard link type: the userspace plane (wireguard-go) carries the tunnel")
            return available
        } catch {
            log.log(.info, "the kernel's wireguard link type could not be probed: \(error)")
            return nil
        }
    }

    /// The peers' latest handshakes over UAPI, on a thread of their own (a stuck wireguard-go must
    /// not hold up the effects for the client's deadline); `tunnelPeersRead` or
    /// `tunnelPeersReadFailed` follows.
    func readTunnelPeers(_ machine: Machine) {
        guard let pid = machine.tunnelPID else {
            inbox.post(.event(.tunnelPeersReadFailed("wireguard-go is not running")))
            return
        }
        let client = WireGuardUAPIClient(interface: machine.tunnelInterface, expectedPID: pid)
        do {
            try peerReadThread.run { [inbox] in
                do {
                    let status = try client.status()
                    inbox.post(.event(.tunnelPeersRead(status.peers.map(WireGuardPeerSample.init), at: WallClock.now)))
                } catch {
                    inbox.post(.event(.tunnelPeersReadFailed("\(error)")))
                }
            }
        } catch {
            inbox.post(.event(.tunnelPeersReadFailed("no thread to read the peers: \(error)")))
        }
    }
}

/// What `vpnsup status` reads of a WireGuard tunnel when it is asked, on the status thread: the
/// peers as wireguard-go counts them (endpoint, latest handshake, transfer).
struct WireGuardStatusReader: Sendable {
    var interface: String
    /// Whether the kernel has the wireguard link type (probed once at start; nil: unknown).
    var kernelHasWireGuard: Bool?

    struct Reading: Sendable {
        var kernelHasWireGuard: Bool?
        var peers: [WireGuardStatus.Peer]?
        var error: String?

        /// Into the status the interpreter published (which has the machine's part).
        func apply(to snapshot: inout StatusSnapshot) {
            snapshot.wireGuard?.kernelHasWireGuard = kernelHasWireGuard
            snapshot.wireGuard?.peers = peers
            snapshot.wireGuard?.readError = error
        }
    }

    func read(pid: Int32?) -> Reading {
        var reading = Reading(kernelHasWireGuard: kernelHasWireGuard)
        guard let pid else { return reading }
        let now = Date()
        do {
            let status = try WireGuardUAPIClient(interface: interface, expectedPID: pid, timeout: .seconds(1)).status()
            reading.peers = status.peers.map { peer in
                let handshake = peer.lastHandshake.map { Date(timeIntervalSince1970: Double($0.components.seconds)) }
                return WireGuardStatus.Peer(
                    publicKey: peer.publicKey.base64, endpoint: peer.endpoint,
                    latestHandshake: handshake.map(StatusBoard.timestamp),
                    latestHandshakeAgeSeconds: handshake.map { max(0, (now.timeIntervalSince($0) * 10).rounded() / 10) },
                    bytesIn: peer.receivedBytes, bytesOut: peer.sentBytes)
            }
        } catch {
            reading.error = "\(error)"
        }
        return reading
    }
}
