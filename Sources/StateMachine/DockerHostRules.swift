/// The host's `DOCKER-USER` rules that let a router container forward for a Docker `--internal`
/// network: Docker drops whatever enters or leaves an internal network's bridge for another
/// subnet, including the LAN containers' traffic to their router on the same bridge (bridged
/// packets pass iptables when `br_netfilter` is loaded). The original project asked users to
/// write these two rules by hand.
public struct DockerHostRules: Hashable, Sendable {
    public static let chain = "DOCKER-USER"
    /// Marks vpnsup's rules, so that they can be told apart and removed.
    public static let comment = "vpnsup host-rules"

    public var subnet: IPv4Network
    public var bridge: String

    /// `subnet` is the internal network's; `bridge` its Linux bridge (`br-<id>` unless named).
    public init(subnet: IPv4Network, bridge: String) throws(ConfigurationError) {
        self.subnet = subnet
        self.bridge = try Configuration.interfaceName("--bridge", bridge)
    }

    /// Parses `--subnet` (a CIDR whose host bits are zero).
    public static func subnet(_ text: String) throws(ConfigurationError) -> IPv4Network {
        guard let interface = IPv4Interface(text) else {
            throw ConfigurationError("--subnet", text, "is not an IPv4 network with prefix length, e.g. 172.22.0.0/24")
        }
        guard interface.network.address == interface.address else {
            throw ConfigurationError("--subnet", text, "has host bits set (the network is \(interface.network))")
        }
        return interface.network
    }

    /// Each rule's specification, as given after `-A DOCKER-USER` (and to `-C`/`-D`): traffic
    /// into the LAN from elsewhere (replies, port forwards) and out of it to elsewhere, both on
    /// the bridge itself, that is, between the LAN containers and their router.
    public var rules: [[String]] {
        let network = subnet.description
        let common = ["-i", bridge, "-o", bridge, "-m", "comment", "--comment", Self.comment, "-j", "ACCEPT"]
        return [
            ["!", "-s", network, "-d", network] + common,
            ["-s", network, "!", "-d", network] + common,
        ]
    }

    /// The rules as `iptables-restore --noflush` input, the form the original README used.
    public var restoreText: String {
        var lines = ["*filter", ":\(Self.chain) - [0:0]"]
        for rule in rules {
            lines.append((["-A", Self.chain] + rule).map { $0.contains(" ") ? "\"\($0)\"" : $0 }.joined(separator: " "))
        }
        lines.append("COMMIT")
        return lines.joined(separator: "\n") + "\n"
    }
}
