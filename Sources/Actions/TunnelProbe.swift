import StateMachine

/// One DNS question sent through the tunnel interface (SO_BINDTODEVICE, so it cannot take any
/// other way) to a resolver behind it. Any well-formed answer to it, NXDOMAIN or SERVFAIL
/// included, proves that the tunnel carries packets both ways: the probe judges the tunnel, not
/// the resolver. Blocking, for at most `timeout`: run it on a thread of its own.
public struct TunnelProbe: Sendable {
    public var server: IPv4Address
    public var port: UInt16
    public var name: String
    public var device: String
    public var timeout: Duration

    public init(server: IPv4Address, port: UInt16 = 53, name: String, device: String, timeout: Duration) {
        self.server = server
        self.port = port
        self.name = name
        self.device = device
        self.timeout = timeout
    }

    /// How one probe went: `failure` is nil when an answer came, otherwise why none did; `latency`
    /// runs from before the socket is opened to the answer (or to the failure).
    public struct Measurement: Hashable, Sendable {
        public var failure: String?
        public var latency: Duration

        public init(failure: String?, latency: Duration) {
            self.failure = failure
            self.latency = latency
        }
    }

    /// nil when an answer came; otherwise why none did.
    public func run() -> String? { measure().failure }

    /// Runs the probe and times it (the DNS probe latency of `vpnsup metrics`).
    public func measure() -> Measurement {
        let started = ContinuousClock.now
        let failure = ask(until: started + timeout)
        return Measurement(failure: failure, latency: ContinuousClock.now - started)
    }

    private func ask(until deadline: ContinuousClock.Instant) -> String? {
        let id = UInt16.random(in: .min ... .max)
        guard let query = DNSMessage.query(id: id, name: name) else { return "\(name) is not a DNS name" }
        do {
            let socket = try MarkedSocket(.udp, mark: 0, device: device)
            try socket.connect(server, port: port, until: deadline)
            try socket.send(query)
            while let datagram = try socket.receiveDatagram(until: deadline) {
                // Anything else (a stray or forged datagram) is not an answer to this question.
                if DNSMessage.response(datagram, id: id, name: name) != nil { return nil }
            }
            return "no answer from \(server) within \(Resolver.text(timeout))"
        } catch {
            return "\(server): \(error)"
        }
    }
}
