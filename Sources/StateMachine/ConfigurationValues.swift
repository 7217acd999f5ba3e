/// A configuration value that cannot be used. Printed as one line naming the variable and the value,
/// e.g. `IP_ADDR=garbage is not an IPv4 address with prefix length`; control characters in the
/// value (a newline that would forge a second line) print escaped.
public struct ConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    public var variable: String
    public var value: String
    public var problem: String

    public init(_ variable: String, _ value: String, _ problem: String) {
        self.variable = variable
        self.value = value
        self.problem = problem
    }

    public var description: String { escapedForDisplay("\(variable)=\(value) \(problem)") }
}

/// `[PUBLIC_PORT:]IP:PORT[/tcp|/udp]`: connections arriving on the tunnel at `publicPort` go to `target:targetPort`.
public struct PortForward: Hashable, Sendable, CustomStringConvertible {
    public var publicPort: UInt16
    public var target: IPv4Address
    public var targetPort: UInt16
    public var transport: TransportProtocol

    public init(publicPort: UInt16, target: IPv4Address, targetPort: UInt16, transport: TransportProtocol) {
        self.publicPort = publicPort
        self.target = target
        self.targetPort = targetPort
        self.transport = transport
    }

    public var description: String { "\(publicPort)/\(transport) -> \(target):\(targetPort)" }
}

/// The DNS probe: a question sent through the tunnel to a resolver every `interval`; any
/// well-formed answer (NXDOMAIN included) proves the tunnel carries traffic both ways.
public struct ProbeSettings: Hashable, Sendable {
    public static let defaultName = "example.com"
    public static let defaultInterval: Duration = .seconds(10)
    public static let defaultTimeout: Duration = .seconds(2)
    public static let defaultFailures = 3

    /// PROBE_SERVER, or DNS when unset; nil: nobody to ask, no probe.
    public var server: IPv4Address?
    public var name: String
    /// nil: PROBE_INTERVAL=0, no probe.
    public var interval: Duration?
    public var timeout: Duration
    public var failures: Int

    public init(server: IPv4Address?, name: String, interval: Duration?, timeout: Duration, failures: Int) {
        self.server = server
        self.name = name
        self.interval = interval
        self.timeout = timeout
        self.failures = failures
    }

    /// The interval when there is a server to ask.
    public var effectiveInterval: Duration? { server == nil ? nil : interval }
}

/// METRICS_LISTEN: where `GET /metrics` is served over HTTP. Only ever the LAN gateway address or
/// a loopback address, never one the WAN can reach.
public struct MetricsListen: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var port: UInt16

    public init(address: IPv4Address, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// 127.0.0.0/8.
    public var isLoopback: Bool { address.value >> 24 == 127 }

    public var description: String { "\(address):\(port)" }
}
