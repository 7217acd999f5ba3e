import Actions
import StateMachine
import SystemSupport

/// A wg-quick CONFIG checked as `run` checks it (the variables, the file, TUNNEL_IF), for
/// `vpnsup rules`: the layout its rulesets are built from, with the peers' endpoints that can be
/// pinned without resolving (host names are resolved only by `run`).
struct WireGuardReview {
    let configuration: Configuration
    let file: WireGuardConfiguration
    let profile: WireGuardProfile

    /// nil when CONFIG is not a WireGuard file (by VPN_TYPE, else by its first line), or cannot
    /// be read: the OpenVPN review then says what is wrong.
    static func load(_ values: [String: String]) -> Result<WireGuardReview, ConfigurationRejection>? {
        let configuration: Configuration
        do {
            configuration = try Configuration(values)
        } catch {
            return nil
        }
        let path = configuration.openvpnConfigPath
        guard case .success(let text) = TextFile.read(path) else { return nil }
        do {
            guard try TunnelKind.resolve(vpnType: values["VPN_TYPE"], configText: text) == .wireguard else { return nil }
            let file = try WireGuardConfiguration(text: text, path: path)
            let settings = try WireGuardSettings(values)
            return .success(WireGuardReview(configuration: configuration, file: file, profile: WireGuardProfile(file, settings: settings)))
        } catch {
            return .failure(ConfigurationRejection(line: error.description))
        }
    }

    /// The peers' endpoints given as addresses; names are pinned by `run` once resolved.
    var layout: NetworkLayout {
        configuration.wireGuardLayout(profile, endpoints: Array(profile.endpoints(pins: RemotePins(remotes: profile.remotes)).values)
            .sorted { ($0.address.value, $0.port) < ($1.address.value, $1.port) })
    }

    /// The file's notes and each peer's endpoint as nft comments.
    var planComment: String {
        var text = ""
        for note in file.notes { text += "# \(note)\n" }
        text += "# WireGuard link \(profile.interface), the transport marked \(String(Configuration.transportMark, radix: 16, uppercase: false).withHexPrefix)\n"
        for peer in profile.peers {
            let key = String(peer.publicKey.base64.prefix(8)) + "…"
            switch peer.endpoint.host {
            case .v4: text += "# peer \(key) \(peer.endpoint)/udp: pinned as written\n"
            case .name: text += "# peer \(key) \(peer.endpoint)/udp: resolved by run (under the resolving ruleset) and pinned\n"
            case .v6: text += "# peer \(key) \(peer.endpoint): skipped (the WAN carries IPv4 only)\n"
            }
        }
        return text
    }
}

private extension String {
    var withHexPrefix: String { "0x" + self }
}
