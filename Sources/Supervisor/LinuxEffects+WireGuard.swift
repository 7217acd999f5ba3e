import Actions
import FoundationEssentials
import StateMachine
import Watchers

// The effects particular to WireGuard: the kind of CONFIG, reading a wg-quick file (at start and
// on SIGHUP), the kernel plane's probe, and reading the peers' handshakes when the machine asks.
extension LinuxEffects {
    /// `VPN_TYPE` when set, else what CONFIG looks like. A file that cannot be read is left to
    /// the OpenVPN reader, which names it.
    func tunnelKind(_ configuration: Configuration) -> Result<TunnelKind, EffectError> {
        let text: String
        switch TextFile.read(configuration.openvpnConfigPath) {
        case .success(let read): text = read
        case .failure: text = ""
        }
        do {
            return .success(try TunnelKind.resolve(vpnType: settings.values["VPN_TYPE"], configText: text))
        } catch {
            return .failure(EffectError(error.description))
        }
    }

    /// Parses the wg-quick file and `TUNNEL_IF`, keeps the file (its keys) in the WireGuard
    /// backend under a new token, and logs what the file holds that vpnsup does not apply (the
    /// lines wait, as every line does, until the configuration is accepted).
    func readWireGuard(_ configuration: Configuration, inUse: CredentialsToken?)
        -> Result<(profile: WireGuardProfile, token: CredentialsToken), EffectError> {
        let path = configuration.openvpnConfigPath
        let text: String
        switch TextFile.read(path) {
        case .success(let read): text = read
        case .failure(let error): return .failure(EffectError("CONFIG=\(path) cannot be read: \(error)"))
        }
        let file: WireGuardConfiguration
        let settings: WireGuardSettings
        do {
            file = try WireGuardConfiguration(text: text, path: path)
            settings = try WireGuardSettings(self.settings.values)
        } catch {
            return .failure(EffectError(error.description))
        }
        for note in file.notes { log.log(.notice, note) }
        if let mode = TextFile.mode(path), let warning = WireGuardConfiguration.permissionWarning(path: path, mode: mode) {
            log.log(.warning, warning)
        }
        let token = wireGuard.keep(file, inUse: inUse)
        return .success((WireGuardProfile(file, settings: settings), token))
    }

    /// SIGHUP with a WireGuard tunnel: the file again. What cannot be read or parsed, or is no
    /// longer a wg-quick file, is refused here; the machine judges the endpoints.
    func reloadWireGuard(_ configuration: Configuration, _ machine: Machine) -> Event {
        switch tunnelKind(configuration) {
        case .success(.wireguard):
            break
        case .success(.openvpn):
            return .reloadRefused("CONFIG=\(configuration.openvpnConfigPath) is no longer a wg-quick file; "
                + "restart vpnsup to change the kind of tunnel")
        case .failure(let error):
            return .reloadRefused(error.description)
        }
        switch readWireGuard(configuration, inUse: machine.credentials) {
        case .success(let read):
            return .configurationReloaded(ReloadedConfiguration(remotes: read.profile.remotes, credentials: read.token,
                                                                wireGuard: read.profile))
        case .failure(let error):
            return .reloadRefused(error.description)
        }
    }

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

    /// The peers' latest handshakes over UAPI, on a thread of its own (a stuck wireguard-go must
    /// not hold up the effects for the client's deadline); `tunnelPeersRead` or
    /// `tunnelPeersReadFailed` follows.
    func readTunnelPeers(_ machine: Machine) {
        guard let pid = machine.tunnelPID else {
            inbox.post(.event(.tunnelPeersReadFailed("wireguard-go is not running")))
            return
        }
        let client = WireGuardUAPIClient(interface: machine.tunnelInterface, expectedPID: pid)
        do {
            try ReaderThread.start(name: "vpnsup-wg-look") { [inbox] in
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
