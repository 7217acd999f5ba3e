import Glibc
import StateMachine
import SystemSupport

/// What resolving a set of names gave.
public struct ResolverOutcome: Hashable, Sendable {
    /// Name (as asked) -> its IPv4 addresses; only names that resolved.
    public var addresses: [String: [IPv4Address]] = [:]
    /// Name (as asked) -> why it did not resolve, for the log.
    public var failures: [String: String] = [:]

    public init(addresses: [String: [IPv4Address]] = [:], failures: [String: String] = [:]) {
        self.addresses = addresses
        self.failures = failures
    }
}

/// A minimal DNS stub resolver for the host names of OpenVPN `remote` lines (A records only).
///
/// Every socket it opens carries `mark` (SO_MARK), so the resolving ruleset can let exactly these
/// packets out through the WAN. Queries go over UDP, over TCP when an answer is truncated. All
/// names are asked at once, one nameserver at a time, like glibc's resolver: each try waits at
/// most `timeout`, and there are `attempts` rounds over the nameservers, within `budget` overall.
/// Blocking: run it on a thread of its own.
public struct Resolver: Sendable {
    public var nameservers: [IPv4Address]
    public var port: UInt16
    public var mark: UInt32
    public var timeout: Duration
    public var attempts: Int
    public var budget: Duration

    public init(nameservers: [IPv4Address], port: UInt16 = 53, mark: UInt32,
                timeout: Duration = .seconds(2), attempts: Int = 2, budget: Duration = .seconds(10)) {
        self.nameservers = nameservers
        self.port = port
        self.mark = mark
        self.timeout = timeout
        self.attempts = attempts
        self.budget = budget
    }

    public func resolve(_ names: [String]) -> ResolverOutcome {
        var outcome = ResolverOutcome()
        var pending: [String] = []
        for name in names where !pending.contains(name) {
            if DNSMessage.encode(name) == nil {
                outcome.failures[name] = "not a DNS name"
            } else {
                pending.append(name)
            }
        }
        guard !nameservers.isEmpty else {
            for name in pending { outcome.failures[name] = "no IPv4 nameserver to ask" }
            return outcome
        }
        let clock = ContinuousClock()
        let end = clock.now + budget
        var lastError: [String: String] = [:]
        rounds: for _ in 0..<max(1, attempts) {
            for server in nameservers {
                guard !pending.isEmpty else { break rounds }
                let now = clock.now
                guard now < end else { break rounds }
                let deadline = min(now + timeout, end)
                let answers = ask(server, pending, until: deadline)
                for name in pending {
                    switch answers[name] {
                    case .some(.resolved(let addresses)):
                        outcome.addresses[name] = addresses
                    case .some(.final(let why)):
                        outcome.failures[name] = "\(server): \(why)"
                    case .some(.retry(let why)):
                        lastError[name] = "\(server): \(why)"
                    case .none:
                        lastError[name] = "\(server): no answer within \(Self.text(deadline - now))"
                    }
                }
                pending.removeAll { outcome.addresses[$0] != nil || outcome.failures[$0] != nil }
            }
        }
        for name in pending { outcome.failures[name] = lastError[name] ?? "no answer within \(Self.text(budget))" }
        return outcome
    }

    /// One name's answer from one server.
    enum Answer: Hashable {
        case resolved([IPv4Address])
        /// An authoritative no: NXDOMAIN, or no A record.
        case final(String)
        /// This server could not answer; another may.
        case retry(String)
    }

    /// Asks `server` for every name at once over UDP; names whose answer is truncated are asked
    /// again over TCP. Returns what arrived before `deadline`.
    func ask(_ server: IPv4Address, _ names: [String], until deadline: ContinuousClock.Instant) -> [String: Answer] {
        var answers: [String: Answer] = [:]
        var truncated: [String] = []
        do {
            let socket = try MarkedSocket(.udp, mark: mark)
            try socket.connect(server, port: port, until: deadline)
            var waiting: [UInt16: (name: String, query: [UInt8])] = [:]
            for name in names {
                var id = UInt16.random(in: .min ... .max)
                while waiting[id] != nil { id = UInt16.random(in: .min ... .max) }
                guard let query = DNSMessage.query(id: id, name: name) else { continue }
                waiting[id] = (name, query)
                try socket.send(query)
            }
            while !waiting.isEmpty, let datagram = try socket.receiveDatagram(until: deadline) {
                guard datagram.count >= 2 else { continue }
                let id = UInt16(datagram[0]) << 8 | UInt16(datagram[1])
                guard let (name, _) = waiting[id],
                      let response = DNSMessage.response(datagram, id: id, name: name) else { continue }
                waiting[id] = nil
                if response.truncated {
                    truncated.append(name)
                } else {
                    answers[name] = Self.judge(response)
                }
            }
        } catch {
            for name in names where answers[name] == nil && !truncated.contains(name) {
                answers[name] = .retry("\(error)")
            }
        }
        for name in truncated {
            answers[name] = askOverTCP(server, name, until: deadline)
        }
        return answers
    }

    func askOverTCP(_ server: IPv4Address, _ name: String, until deadline: ContinuousClock.Instant) -> Answer? {
        let id = UInt16.random(in: .min ... .max)
        guard let query = DNSMessage.query(id: id, name: name) else { return .final("not a DNS name") }
        do {
            let socket = try MarkedSocket(.tcp, mark: mark)
            try socket.connect(server, port: port, until: deadline)
            // RFC 1035 4.2.2: each message is preceded by its length.
            try socket.send([UInt8(query.count >> 8), UInt8(query.count & 0xff)] + query, until: deadline)
            guard let prefix = try socket.receive(exactly: 2, until: deadline) else { return nil }
            let length = Int(prefix[0]) << 8 | Int(prefix[1])
            guard let message = try socket.receive(exactly: length, until: deadline) else { return nil }
            guard let response = DNSMessage.response(message, id: id, name: name), !response.truncated else {
                return .retry("unusable answer over TCP")
            }
            return Self.judge(response)
        } catch {
            return .retry("TCP: \(error)")
        }
    }

    static func judge(_ response: DNSResponse) -> Answer {
        switch response.responseCode {
        case DNSResponse.noError where !response.addresses.isEmpty: .resolved(response.addresses)
        case DNSResponse.noError: .final("no IPv4 address (NOERROR without A record)")
        case DNSResponse.nameError: .final("no such name (NXDOMAIN)")
        default: .retry(response.responseCodeName)
        }
    }

    static func text(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
    }
}

/// A non-blocking IPv4 socket with SO_MARK set, closed on deinit. Every wait is bounded by a
/// deadline. Not Sendable: used on one thread.
final class MarkedSocket {
    enum Kind { case udp, tcp }

    private let socket: OwnedDescriptor
    private var fd: Int32 { socket.rawValue }

    /// `device`: send through this interface only (SO_BINDTODEVICE), whatever the routes say.
    init(_ kind: Kind, mark: UInt32, device: String? = nil) throws(SystemError) {
        let type = kind == .udp ? SocketFlags.datagram : SocketFlags.stream
        socket = OwnedDescriptor(try retryingInterrupts("socket") {
            Glibc.socket(AF_INET, type | SocketFlags.closeOnExec | SocketFlags.nonBlocking, 0)
        })
        var mark = mark
        try retryingInterrupts("setsockopt SO_MARK") {
            setsockopt(socket.rawValue, SOL_SOCKET, SO_MARK, &mark, socklen_t(MemoryLayout<UInt32>.size))
        }
        if let device {
            try retryingInterrupts("setsockopt SO_BINDTODEVICE \(device)") {
                device.withCString { setsockopt(socket.rawValue, SOL_SOCKET, SO_BINDTODEVICE, $0, socklen_t(strlen($0) + 1)) }
            }
        }
    }

    /// For poll(2) by an owner that waits on several sockets (the DNS forwarder).
    var descriptor: Int32 { fd }

    /// For UDP this only fixes the peer (and lets an ICMP port unreachable end the wait early).
    func connect(_ address: IPv4Address, port: UInt16, until deadline: ContinuousClock.Instant) throws(SystemError) {
        var peer = sockaddr_in()
        peer.sin_family = sa_family_t(AF_INET)
        peer.sin_port = port.bigEndian
        peer.sin_addr.s_addr = address.value.bigEndian
        do {
            try retryingInterrupts("connect") {
                withUnsafePointer(to: &peer) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            return
        } catch where error.errno == EINPROGRESS {
            // A TCP connection under way: wait for its outcome below.
        }
        guard try awaitReadiness(fd, for: Int16(POLLOUT), until: deadline) == .ready else {
            throw SystemError(operation: "connect", errno: ETIMEDOUT)
        }
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        try retryingInterrupts("getsockopt") { getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length) }
        if code != 0 { throw SystemError(operation: "connect", errno: code) }
    }

    /// One datagram (UDP).
    func send(_ bytes: [UInt8]) throws(SystemError) {
        let sent = try retryingInterrupts("send") {
            bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, SocketFlags.noSignal) }
        }
        guard sent == bytes.count else { throw SystemError(operation: "send", errno: EMSGSIZE) }
    }

    /// All of `bytes` (TCP).
    func send(_ bytes: [UInt8], until deadline: ContinuousClock.Instant) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            do throws(SystemError) {
                let sent = try retryingInterrupts("send") {
                    bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, SocketFlags.noSignal) }
                }
                guard sent > 0 else { throw SystemError(operation: "send", errno: EPIPE) }
                offset += sent
            } catch where error.errno == EAGAIN {
                guard try awaitReadiness(fd, for: Int16(POLLOUT), until: deadline) == .ready else {
                    throw SystemError(operation: "send", errno: ETIMEDOUT)
                }
            }
        }
    }

    /// The next datagram, or nil at the deadline.
    func receiveDatagram(until deadline: ContinuousClock.Instant) throws(SystemError) -> [UInt8]? {
        var buffer = [UInt8](receiving: 65535)
        while true {
            do {
                let count = try retryingInterrupts("recv") { buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
                return Array(buffer[0..<count])
            } catch where error.errno == EAGAIN {
                guard try awaitReadiness(fd, for: Int16(POLLIN), until: deadline) == .ready else { return nil }
            }
        }
    }

    /// Exactly `count` bytes of the stream, or nil at the deadline.
    func receive(exactly count: Int, until deadline: ContinuousClock.Instant) throws(SystemError) -> [UInt8]? {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: max(1, count))
        while bytes.count < count {
            let wanted = count - bytes.count
            do throws(SystemError) {
                let got = try retryingInterrupts("recv") { buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, wanted, 0) } }
                guard got > 0 else { throw SystemError(operation: "recv", errno: ECONNRESET) } // closed before the whole message
                bytes += buffer[0..<got]
            } catch where error.errno == EAGAIN {
                guard try awaitReadiness(fd, for: Int16(POLLIN), until: deadline) == .ready else { return nil }
            }
        }
        return bytes
    }
}
