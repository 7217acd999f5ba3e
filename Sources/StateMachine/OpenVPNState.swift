/// OpenVPN's connection states, as `>STATE:` reports them.
public enum OpenVPNState: Hashable, Sendable {
    case connecting, wait, auth, getConfig, assignIP, addRoutes, connected, reconnecting, exiting
    case resolve, tcpConnect, authPending
    case other(String)

    private static let wireNames: [(OpenVPNState, String)] = [
        (.connecting, "CONNECTING"), (.wait, "WAIT"), (.auth, "AUTH"), (.getConfig, "GET_CONFIG"),
        (.assignIP, "ASSIGN_IP"), (.addRoutes, "ADD_ROUTES"), (.connected, "CONNECTED"),
        (.reconnecting, "RECONNECTING"), (.exiting, "EXITING"), (.resolve, "RESOLVE"),
        (.tcpConnect, "TCP_CONNECT"), (.authPending, "AUTH_PENDING"),
    ]

    public init(name: String) {
        self = OpenVPNState.wireNames.first { $0.1 == name }?.0 ?? .other(name)
    }

    /// The wire name, e.g. `GET_CONFIG`.
    public var name: String {
        if case .other(let name) = self { return name }
        return OpenVPNState.wireNames.first { $0.0 == self }!.1
    }
}
