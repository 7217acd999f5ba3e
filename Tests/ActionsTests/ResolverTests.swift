import Foundation
import Glibc
import StateMachine
import Testing
import TestSupport
@testable import Actions

/// Root, in the private network namespace `make test` runs in, with dnsmasq installed: the lab's
/// DNS server, here on 127.0.0.1 and a port of its own.
private let resolverTestEnvironment: (dnsmasq: String, nft: String)? = {
    guard IsolatedNetworkNamespace.isRootInside else { return nil }
    let find = { (name: String) in ["/usr/sbin/", "/sbin/", "/usr/bin/"].map { $0 + name }.first { access($0, X_OK) == 0 } }
    guard let dnsmasq = find("dnsmasq"), let nft = find("nft") else { return nil }
    return (dnsmasq, nft)
}()

/// A dnsmasq answering for `.test` only (anything else there is NXDOMAIN), stopped on deinit.
/// Started with vpnsup's own Spawner: it resets the signal mask (a child of a libdispatch thread
/// would otherwise ignore SIGTERM), and Foundation's Process serialises its children's waits.
private final class LocalDNS {
    let port: UInt16
    let pid: Int32

    init(dnsmasq: String) throws {
        port = UInt16.random(in: 20000...40000)
        // big.test has more A records than fit 512 bytes: the UDP answer comes truncated.
        pid = try Spawner.spawn(executable: dnsmasq, arguments: [
            "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
            "--listen-address=127.0.0.1", "--port=\(port)", "--user=root", "--group=root", "--pid-file=",
            "--log-facility=/dev/null", "--local=/test/", "--host-record=vpn.test,192.0.2.7",
            "--host-record=vpn.test,192.0.2.8", "--cname=alias.test,vpn.test",
        ] + (1...40).map { "--host-record=big.test,10.0.0.\($0)" }, environment: [:])
        // Ready once it answers.
        let probe = Resolver(nameservers: [IPv4Address(127, 0, 0, 1)], port: port, mark: 0, timeout: .milliseconds(100), attempts: 1)
        for _ in 0..<50 where probe.resolve(["vpn.test"]).addresses.isEmpty { usleep(50_000) }
    }

    deinit {
        kill(pid, SIGTERM)
        finish(pid)
    }
}

/// Waits for a child; another test's reaper may have taken its status already (ECHILD).
@discardableResult
private func finish(_ pid: Int32) -> Int32? {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        guard errno == EINTR else { return nil }
    }
    return status
}

private func nft(_ nft: String, _ arguments: [String]) throws {
    let pid = try Spawner.spawn(executable: nft, arguments: arguments, environment: [:])
    if let status = finish(pid) { #expect(status == 0, "nft \(arguments.joined(separator: " "))") }
}

/// A UDP socket bound to 127.0.0.1 on a port the kernel chose; it answers only what a test makes it.
private func loopbackUDPSocket() -> (fd: Int32, port: UInt16)? {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = IPv4Address(127, 0, 0, 1).value.bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    guard bound else {
        close(fd)
        return nil
    }
    return (fd, UInt16(bigEndian: address.sin_port))
}

@Suite("Resolver against dnsmasq", .serialized,
       .enabled(if: resolverTestEnvironment != nil, "needs root in a private network namespace, dnsmasq and nft"))
struct ResolverTests {
    let loopback = IPv4Address(127, 0, 0, 1)

    @Test func resolvesNamesAliasesAndFailures() throws {
        let dns = try LocalDNS(dnsmasq: resolverTestEnvironment!.dnsmasq)
        let resolver = Resolver(nameservers: [loopback], port: dns.port, mark: Configuration.transportMark)
        let clock = ContinuousClock()
        var outcome = ResolverOutcome()
        let elapsed = clock.measure { outcome = resolver.resolve(["vpn.test", "ALIAS.test.", "nope.test", "a..b"]) }
        print("resolved 4 names against a local dnsmasq in \(elapsed)")
        #expect(Set(outcome.addresses["vpn.test"] ?? []) == [IPv4Address(192, 0, 2, 7), IPv4Address(192, 0, 2, 8)])
        #expect(Set(outcome.addresses["ALIAS.test."] ?? []) == [IPv4Address(192, 0, 2, 7), IPv4Address(192, 0, 2, 8)])
        #expect(outcome.failures["nope.test"] == "127.0.0.1: no such name (NXDOMAIN)")
        #expect(outcome.failures["a..b"] == "not a DNS name")
    }

    @Test func truncatedAnswersAreAskedAgainOverTCP() throws {
        let dns = try LocalDNS(dnsmasq: resolverTestEnvironment!.dnsmasq)
        let resolver = Resolver(nameservers: [loopback], port: dns.port, mark: Configuration.transportMark)
        let outcome = resolver.resolve(["big.test", "vpn.test"])
        #expect(Set(outcome.addresses["big.test"] ?? []) == Set((1...40).map { IPv4Address(10, 0, 0, UInt8($0)) }))
        #expect(outcome.addresses["vpn.test"]?.count == 2)
    }

    /// With a ruleset that drops DNS to the server unless it carries the transport mark, the
    /// resolver still gets through, over UDP and TCP; unmarked, it does not.
    @Test func everyPacketCarriesTheMark() throws {
        let environment = resolverTestEnvironment!
        let dns = try LocalDNS(dnsmasq: environment.dnsmasq)
        let table = "resolvertest\(dns.port)"
        let rules = """
            table inet \(table) {
                chain output {
                    type filter hook output priority 0; policy accept;
                    udp dport \(dns.port) meta mark != \(Configuration.transportMark) drop
                    tcp dport \(dns.port) meta mark != \(Configuration.transportMark) drop
                }
            }
            """
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("\(table).nft")
        try rules.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        try nft(environment.nft, ["-f", file.path])
        defer { try? nft(environment.nft, ["delete", "table", "inet", table]) }

        let marked = Resolver(nameservers: [loopback], port: dns.port, mark: Configuration.transportMark)
        let outcome = marked.resolve(["big.test", "vpn.test"])
        #expect(outcome.addresses["big.test"]?.count == 40, "TCP carries the mark too")
        #expect(outcome.addresses["vpn.test"]?.count == 2)

        // Dropped on the way out, so the send itself fails.
        let unmarked = Resolver(nameservers: [loopback], port: dns.port, mark: 0, timeout: .milliseconds(200), attempts: 1)
        #expect(unmarked.resolve(["vpn.test"]).failures["vpn.test"] == "127.0.0.1: send: Operation not permitted")
    }

    @Test func silentAndClosedServersFailWithinTheBounds() throws {
        // A socket that reads queries and never answers.
        let (silent, port) = try #require(loopbackUDPSocket())
        defer { close(silent) }

        let clock = ContinuousClock()
        let resolver = Resolver(nameservers: [loopback], port: port, mark: Configuration.transportMark,
                                timeout: .milliseconds(150), attempts: 2)
        var outcome = ResolverOutcome()
        let elapsed = clock.measure { outcome = resolver.resolve(["vpn.test", "other.test"]) }
        #expect(outcome.failures["vpn.test"] == "127.0.0.1: no answer within 150 ms")
        #expect(outcome.failures["other.test"] != nil)
        // Two rounds of 150 ms, the names asked together (one after the other would take 600 ms).
        #expect(elapsed >= .milliseconds(300) && elapsed < .milliseconds(600), "\(elapsed)")

        // The overall budget caps the rounds.
        let capped = Resolver(nameservers: [loopback, loopback], port: port, mark: 0, timeout: .seconds(1), attempts: 3,
                              budget: .milliseconds(250))
        let cappedElapsed = clock.measure { _ = capped.resolve(["vpn.test"]) }
        // Uncapped, two servers by three rounds of 1 s would take 6 s.
        #expect(cappedElapsed < .seconds(3), "\(cappedElapsed)")

        // Nothing listening on the port: the ICMP port unreachable ends the wait at once.
        close(silent)
        let refusedElapsed = clock.measure { outcome = resolver.resolve(["vpn.test"]) }
        #expect(outcome.failures["vpn.test"]?.contains("Connection refused") == true, "\(outcome)")
        // Waiting out the two rounds would take 300 ms.
        #expect(refusedElapsed < .milliseconds(300))
    }

    @Test func unreachableServerAndNoServer() {
        // No route to a documentation address in this namespace: fails at once.
        let resolver = Resolver(nameservers: [IPv4Address(192, 0, 2, 53)], mark: 0, timeout: .milliseconds(200))
        #expect(resolver.resolve(["vpn.test"]).failures["vpn.test"]?.hasPrefix("192.0.2.53: connect: ") == true)
        let none = Resolver(nameservers: [], mark: 0)
        #expect(none.resolve(["vpn.test"]).failures["vpn.test"] == "no IPv4 nameserver to ask")
    }
}

@Suite("TunnelProbe against dnsmasq", .serialized,
       .enabled(if: resolverTestEnvironment != nil, "needs root in a private network namespace, dnsmasq and nft"))
struct TunnelProbeTests {
    let loopback = IPv4Address(127, 0, 0, 1)

    @Test func anyAnswerCountsNXDOMAINIncluded() throws {
        let dns = try LocalDNS(dnsmasq: resolverTestEnvironment!.dnsmasq)
        for name in ["vpn.test", "nope.test"] {
            let probe = TunnelProbe(server: loopback, port: dns.port, name: name, device: "lo", timeout: .seconds(2))
            #expect(probe.run() == nil, "\(name)")
        }
    }

    /// `measure()` (the latency of `vpnsup_probe_duration_seconds`): an answer comes within the
    /// timeout, and a failure is timed to its end, the timeout.
    @Test func measureTimesTheAnswerAndTheTimeout() throws {
        let dns = try LocalDNS(dnsmasq: resolverTestEnvironment!.dnsmasq)
        let answered = TunnelProbe(server: loopback, port: dns.port, name: "vpn.test", device: "lo", timeout: .seconds(2)).measure()
        #expect(answered.failure == nil)
        #expect(answered.latency > .zero && answered.latency < .seconds(2))
        let (silent, port) = try #require(loopbackUDPSocket())
        defer { close(silent) }
        let unanswered = TunnelProbe(server: loopback, port: port, name: "vpn.test", device: "lo", timeout: .milliseconds(300)).measure()
        #expect(unanswered.failure == "no answer from 127.0.0.1 within 300 ms")
        #expect(unanswered.latency >= .milliseconds(300))
    }

    @Test func aSilentServerFailsAtTheTimeoutAndStrayDatagramsAreNotAnswers() throws {
        let (silent, port) = try #require(loopbackUDPSocket())
        defer { close(silent) }
        // The "server" answers every query with garbage and with a reply to another id.
        let answering = Thread {
            var buffer = [UInt8](repeating: 0, count: 512)
            var peer = sockaddr_in()
            var peerLength = socklen_t(MemoryLayout<sockaddr_in>.size)
            let count = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(silent, &buffer, buffer.count, 0, $0, &peerLength) }
            }
            guard count >= 12 else { return }
            var wrongID = Array(buffer[0..<count])
            wrongID[0] ^= 0xff
            wrongID[2] |= 0x80
            for reply in [[UInt8](repeating: 0x41, count: 40), wrongID] {
                _ = withUnsafePointer(to: &peer) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(silent, reply, reply.count, 0, $0, peerLength) }
                }
            }
        }
        answering.start()
        let probe = TunnelProbe(server: loopback, port: port, name: "vpn.test", device: "lo", timeout: .milliseconds(300))
        #expect(probe.run() == "no answer from 127.0.0.1 within 300 ms")
    }

    @Test func theProbeCannotTakeAnotherWay() {
        let probe = TunnelProbe(server: loopback, port: 53, name: "vpn.test", device: "nosuchtun9", timeout: .milliseconds(200))
        let failure = probe.run()
        #expect(failure?.contains("SO_BINDTODEVICE nosuchtun9") == true, "\(failure ?? "answered")")
    }
}
