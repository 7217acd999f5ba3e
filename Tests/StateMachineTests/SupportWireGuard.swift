import StateMachine

// WireGuard fixtures for the StateMachine tests and the generated documentation: a wg-quick
// profile with one peer (by address, or by host name), the events WireGuard's evidence brings,
// and the scenarios that drive a WireGuard machine into each of its states through real events.

let serverKey = WireGuardKey(bytes: Array(repeating: 7, count: WireGuardKey.byteCount))!
let wireGuardConfiguration = try! Configuration(["CONFIG": "/config/wg0.conf", "IP_ADDR": "172.22.0.1/24"])
let literalPeerProfile = WireGuardProfile(
    interface: "wg0", peers: [.init(publicKey: serverKey, endpoint: WireGuardEndpoint("192.0.2.1:51820")!)],
    dnsServers: [IPv4Address(10, 64, 0, 1)])
let namedPeerProfile = WireGuardProfile(
    interface: "wg0", peers: [.init(publicKey: serverKey, endpoint: WireGuardEndpoint("vpn.example.net:51820")!)],
    dnsServers: [IPv4Address(10, 64, 0, 1)])
let wireGuardLoaded = Event.configurationLoaded(LoadedConfiguration(
    configuration: wireGuardConfiguration, remotes: literalPeerProfile.remotes, credentials: CredentialsToken(generation: 1),
    wireGuard: literalPeerProfile))
let wireGuardLoadedWithHostNames = Event.configurationLoaded(LoadedConfiguration(
    configuration: wireGuardConfiguration, remotes: namedPeerProfile.remotes, nameservers: [IPv4Address(192, 0, 2, 53)],
    credentials: CredentialsToken(generation: 1), wireGuard: namedPeerProfile))
/// SIGHUP's result for the literal profile: the same peer at another address, a new file.
let wireGuardReloaded = Event.configurationReloaded(ReloadedConfiguration(
    remotes: [Remote(host: "192.0.2.2", port: 51820, transport: .udp)], credentials: CredentialsToken(generation: 2),
    wireGuard: WireGuardProfile(interface: "wg0", peers: [.init(publicKey: serverKey, endpoint: WireGuardEndpoint("192.0.2.2:51820")!)])))

/// The wall-clock time the peers were configured at (WireGuard stamps handshakes in Unix time).
let configuredAt: Duration = .seconds(1_800_000_000)
let peersConfigured = Event.tunnelPeersConfigured(at: configuredAt)
func peersRead(handshake: Duration?, sent: UInt64, at: Duration) -> Event {
    .tunnelPeersRead([WireGuardPeerSample(publicKey: serverKey, lastHandshake: handshake.map { configuredAt + $0 }, sentBytes: sent)],
                     at: configuredAt + at)
}
/// A handshake a second after the peers were configured, read then.
let handshakeRead = peersRead(handshake: .seconds(1), sent: 148, at: .seconds(1))
/// Still no handshake 30 s after configuring (overdue while connecting).
let noHandshakeRead = peersRead(handshake: nil, sent: 0, at: .seconds(30))
let peersReadFailed = Event.tunnelPeersReadFailed("UAPI wg0: connect: Connection refused")
let handshakeLook = Event.timerFired(.handshakeLook)

/// One instance of every WireGuard event.
let wireGuardEvents: [Event] = [peersConfigured, handshakeRead, noHandshakeRead, peersReadFailed, handshakeLook]

extension Scenario {
    /// wireguard-go spawned under the committed connecting policy; its socket not there yet.
    static let wgStarted = Scenario(name: "TunnelConnecting (WireGuard, wireguard-go started)", state: .tunnelConnecting, path: [
        .start, .firewallCommitted(.lockdown), wireGuardLoaded, .lanAddressPresent, .firewallCommitted(.connecting),
        .tunnelStarted(pid: 4242),
    ])
    /// Its socket appeared: the link configured, the device released (configured over UAPI).
    static let wgConfigured = Scenario(name: "TunnelConnecting (WireGuard, peers configured)", state: .tunnelConnecting,
                                       path: wgStarted.path + [.tunnelControlConnected, .tunnelHeld, peersConfigured])
    /// No handshake 30 s after the peers were configured: a wrong key, a server away.
    static let wgOverdue = Scenario(name: "TunnelConnecting (WireGuard, handshake overdue)", state: .tunnelConnecting,
                                    path: wgConfigured.path + [handshakeLook, noHandshakeRead])
    /// A handshake, the link up, the up policy committed.
    static let wgUp = Scenario(name: "TunnelUp (WireGuard)", state: .tunnelUp,
                               path: wgConfigured.path + [handshakeLook, handshakeRead, .tunnelLinkUp, .firewallCommitted(.up)])
    /// The handshake older than 180 s while sending, confirmed 10 s later.
    static let wgStale = Scenario(name: "Degraded (WireGuard, handshake stale)", state: .degraded, path: wgUp.path + staleReads)
    /// The same peer by host name: stale for a full round, its name is resolved again.
    static let wgReresolving = Scenario(
        name: "Degraded (WireGuard, resolving the peer's name again)", state: .degraded,
        path: [.start, .firewallCommitted(.lockdown), wireGuardLoadedWithHostNames, .nameResolutionOpened, resolved,
               .firewallCommitted(.lockdown), .lanAddressPresent, .firewallCommitted(.connecting), .tunnelStarted(pid: 4242),
               .tunnelControlConnected, .tunnelHeld, peersConfigured, handshakeLook, handshakeRead, .tunnelLinkUp,
               .firewallCommitted(.up)] + staleReads + [.nameResolutionOpened])

    static let staleReads: [Event] = [
        handshakeLook, peersRead(handshake: .seconds(1), sent: 4000, at: .seconds(200)),
        handshakeLook, peersRead(handshake: .seconds(1), sent: 5000, at: .seconds(211)),
    ]

    static let wireGuard: [Scenario] = [wgStarted, wgConfigured, wgOverdue, wgUp, wgStale, wgReresolving]
}
