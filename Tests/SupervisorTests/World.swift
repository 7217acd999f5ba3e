import FoundationEssentials
import Logging
import StateMachine
@testable import Supervisor
import Watchers

/// A whole supervisor without root: the real interpreter, translators and record, the recording
/// fake of the effects. Tests are the world around it: they post what the kernel, OpenVPN and
/// the signals would report, one input at a time, and look at what was done.
struct World {
    let driver: Driver
    let effects: RecordingEffects
    let board: StatusBoard
    let notifier = RecordingNotifier()
    let log = RecordingLog()

    static let configuration = try! Configuration(["CONFIG": "/config/client.ovpn", "IP_ADDR": "172.22.0.1/24",
                                                   "LAN_IF": "eth1", "WAN_IF": "eth0"])
    static let literal = LoadedConfiguration(configuration: configuration,
                                             remotes: [Remote(host: "192.0.2.1", port: 1194, transport: .udp)],
                                             credentials: CredentialsToken(generation: 1))
    static let hostName = LoadedConfiguration(configuration: configuration,
                                              remotes: [Remote(host: "vpn.example.net", port: 1194, transport: .udp)],
                                              nameservers: [IPv4Address(192, 0, 2, 53)],
                                              credentials: CredentialsToken(generation: 1))

    init(load: Event = .configurationLoaded(World.literal), timings: Timings = Timings(jitter: 0)) {
        let supervisorLog = SupervisorLog(log.logger())
        effects = RecordingEffects(load: load, log: supervisorLog)
        board = StatusBoard(StatusSnapshot(since: "t0", pid: 1, startedAt: "t0"))
        driver = Driver(machine: Machine(timings: timings), effects: effects, inbox: Inbox(), log: supervisorLog,
                        board: board, notifier: notifier)
    }

    // MARK: What the world reports

    func start() async { await driver.step(.event(.start)) }

    func post(_ input: Input) async { await driver.step(input) }

    func event(_ event: Event) async { await driver.step(.event(event)) }

    func netlink(_ event: NetlinkEvent) async { await driver.step(.netlink(event)) }

    func management(_ event: ManagementChannelEvent) async { await driver.step(.tunnel(OpenVPNTranslator.translate(event))) }

    func management(_ message: ManagementMessage) async { await management(.message(message)) }

    func signal(_ signal: SignalEvent) async { await driver.step(.signal(signal)) }

    /// netlink: IP_ADDR is on eth1.
    func addressAppears() async {
        await netlink(.address(interface: "eth1", index: 3, address: IPv4Interface("172.22.0.1/24")!, added: true))
    }

    func tunnelLink(up: Bool) async { await netlink(.link(name: "tun0", index: 9, up: up)) }

    /// OpenVPN's `>STATE:` line.
    func openvpnState(_ name: String, tunnel: String = "", remote: String = "", port: String = "") async {
        await management(.state(StateRecord(time: 1_700_000_000, state: OpenVPNState(name: name),
                                            detail: name == "CONNECTED" ? "SUCCESS" : "",
                                            tunnelIPv4: tunnel, remoteAddress: remote, remotePort: port)))
    }

    /// From nothing to TunnelUp, literal remote: address, connecting, OpenVPN, CONNECTED, tun0.
    func bringUp() async {
        await start()
        await addressAppears()
        await management(.connected)
        await management(.hold("Waiting for hold release:0"))
        await management(.passwordNeeded(type: "Auth"))
        await openvpnState("CONNECTED", tunnel: "10.8.0.2", remote: "192.0.2.1", port: "1194")
        await tunnelLink(up: true)
    }

    // MARK: What was done

    var actions: [Action] { get async { await effects.actions } }
    var performed: [RecordingEffects.Performed] { get async { await effects.performed } }
    var machine: Machine { get async { await driver.current } }
    var status: StatusSnapshot { board.current }

    /// The actions performed since the count `since` was taken.
    func actions(since count: Int) async -> [Action] { Array(await actions.dropFirst(count)) }
}

extension Array where Element == Action {
    func index(of action: Action) -> Int? { firstIndex(of: action) }
}
