import Foundation
import Glibc
import StateMachine
import SystemSupport
import Testing
@testable import Watchers

/// The metrics responder serving real HTTP and a real unix socket, in the private network namespace
/// `make test` runs the tests in (its loopback, and an address the test adds and removes there).
@Suite("MetricsResponder", .serialized,
       .enabled(if: isolatedRootNetns, "needs root in a private network namespace (unshare --net)"))
struct MetricsResponderTests {
    static let body = Array("# HELP vpnsup_state x\n# TYPE vpnsup_state gauge\nvpnsup_state{state=\"TunnelUp\"} 1.0\n".utf8)
    static let loopback = MetricsListen(address: IPv4Address(127, 0, 0, 1), port: 0)

    static func scratch() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vpnsup-metrics-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory.path
    }

    static func start(unix: String? = nil, group: UInt32? = nil, http: MetricsListen? = loopback,
                      limits: MetricsResponder.Limits = .init(),
                      exposition: @escaping @Sendable () -> [UInt8]? = { body }) throws -> MetricsResponder {
        try MetricsResponder.start(unixPath: unix, group: group, http: http, limits: limits, exposition: exposition)
    }

    @Test func aScrapeGetsTheExpositionAndTheConnectionCloses() throws {
        let responder = try Self.start()
        defer { responder.close() }
        let port = try #require(responder.httpPort)
        #expect(port != 0, "the port bound for 0 is reported")
        let client = try HTTPTestClient(port: port)
        try client.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n")
        let response = try client.readToEnd()
        let expected = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            + "Content-Length: \(Self.body.count)\r\nConnection: close\r\n\r\n" + String(decoding: Self.body, as: UTF8.self)
        #expect(String(decoding: response, as: UTF8.self) == expected)
    }

    @Test func requestsOtherThanTheScrapeAreRefused() throws {
        let responder = try Self.start()
        defer { responder.close() }
        let port = try #require(responder.httpPort)
        for (request, status) in [("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "405"), ("GET /status HTTP/1.1\r\n\r\n", "404"),
                                  ("BREW /pot HTCPCP/1.0\r\n\r\n", "400"),
                                  ("GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: 5000), "431")] {
            let client = try HTTPTestClient(port: port)
            try client.send(request)
            let response = String(decoding: try client.readToEnd(), as: UTF8.self)
            #expect(response.hasPrefix("HTTP/1.1 \(status) "), "\(request.prefix(30).debugDescription): \(response.prefix(60))")
        }
    }

    @Test func nothingToShowIs503OverHTTPAndNothingOnTheSocket() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/metrics.sock"
        let responder = try Self.start(unix: path) { nil }
        defer { responder.close() }
        let client = try HTTPTestClient(port: try #require(responder.httpPort))
        try client.send("GET /metrics HTTP/1.1\r\n\r\n")
        #expect(String(decoding: try client.readToEnd(), as: UTF8.self).hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(try MetricsResponder.fetch(from: path, within: .seconds(5)) == [])
    }

    @Test func theUnixSocketAnswersOnConnectWithTheStatusSocketsModes() throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/metrics.sock"
        var responder = try Self.start(unix: path, http: nil)
        #expect(responder.httpPort == nil)
        #expect(try MetricsResponder.fetch(from: path, within: .seconds(5)) == Self.body)
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600 && info.st_uid == 0 && info.st_gid == 0)
        responder.close()
        #expect(access(path, F_OK) != 0, "close removes the socket")

        responder = try Self.start(unix: path, group: 4242, http: nil)
        defer { responder.close() }
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o660 && info.st_gid == 4242)
        #expect(try MetricsResponder.fetch(from: path, within: .seconds(5)) == Self.body)
    }

    /// Idle clients, and one that sends half a request and stalls, are all still connected when
    /// another client's scrape has been answered; each is dropped at its deadline.
    @Test func idleAndSlowClientsDoNotHoldUpAScrape() throws {
        let responder = try Self.start(limits: .init(connections: 8, deadline: .seconds(4)))
        defer { responder.close() }
        let port = try #require(responder.httpPort)
        let idle = try (0..<4).map { _ in try HTTPTestClient(port: port) }
        let slow = try HTTPTestClient(port: port)
        try slow.send("GET /met")

        let scrape = try HTTPTestClient(port: port)
        try scrape.send("GET /metrics HTTP/1.1\r\n\r\n")
        #expect(String(decoding: try scrape.readToEnd(), as: UTF8.self).hasPrefix("HTTP/1.1 200 OK\r\n"))

        for client in idle + [slow] { #expect(client.isOpen, "still waiting for its deadline") }
        for client in idle + [slow] {
            #expect(try client.readToEnd() == [], "dropped at the deadline without an answer")
        }
    }

    @Test func aNewConnectionBeyondTheLimitReplacesTheOldest() throws {
        let responder = try Self.start(limits: .init(connections: 2, deadline: .seconds(30)))
        defer { responder.close() }
        let port = try #require(responder.httpPort)
        let oldest = try HTTPTestClient(port: port)
        let second = try HTTPTestClient(port: port)
        try second.send("G")
        let newest = try HTTPTestClient(port: port)
        try newest.send("GET /metrics HTTP/1.1\r\n\r\n")
        #expect(String(decoding: try newest.readToEnd(), as: UTF8.self).hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(try oldest.readToEnd() == [], "closed to make way, long before its deadline")
        #expect(second.isOpen)
    }

    /// IP_FREEBIND: the gateway address need not be on an interface when the listener starts.
    @Test func listensOnAnAddressBeforeItExists() throws {
        let address = "10.213.0.1"
        _ = try? run("ip", "addr", "del", "\(address)/32", "dev", "lo")
        let responder = try Self.start(http: MetricsListen(address: IPv4Address(address)!, port: 0))
        defer { responder.close() }
        let port = try #require(responder.httpPort)
        #expect(throws: (any Error).self) { try HTTPTestClient(port: port, address: address) }
        _ = try run("ip", "addr", "add", "\(address)/32", "dev", "lo")
        defer { _ = try? run("ip", "addr", "del", "\(address)/32", "dev", "lo") }
        let client = try HTTPTestClient(port: port, address: address)
        try client.send("GET /metrics HTTP/1.1\r\n\r\n")
        #expect(String(decoding: try client.readToEnd(), as: UTF8.self).hasPrefix("HTTP/1.1 200 OK\r\n"))
    }

    @Test func aPortInUseIsReportedAndCloseFreesIt() throws {
        let threads = metricsThreads()
        let first = try Self.start()
        let port = try #require(first.httpPort)
        // Answered: the thread has run, and named itself.
        let client = try HTTPTestClient(port: port)
        try client.send("GET /metrics HTTP/1.1\r\n\r\n")
        #expect(String(decoding: try client.readToEnd(), as: UTF8.self).hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(metricsThreads() == threads + 1)
        let taken = MetricsListen(address: IPv4Address(127, 0, 0, 1), port: port)
        do {
            let second = try Self.start(http: taken)
            second.close()
            Issue.record("a second listener on \(taken) started")
        } catch let error as MetricsResponderError {
            #expect(error == .http(SystemError(operation: "bind 127.0.0.1:\(port)", errno: EADDRINUSE)))
            #expect(error.description == "bind 127.0.0.1:\(port): Address already in use")
        }
        first.close()
        #expect(metricsThreads() == threads, "close joins the responder's thread")
        #expect(throws: (any Error).self) { try HTTPTestClient(port: port) }
        let again = try Self.start(http: taken)
        again.close()
    }
}

private func metricsThreads() -> Int {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.count { task in
        let comm = try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)
        return comm?.trimmingCharacters(in: .whitespacesAndNewlines) == "vpnsup-metrics"
    }
}

/// A blocking TCP client with a receive timeout, so that no test can hang on the responder.
private final class HTTPTestClient {
    let fd: Int32

    init(port: UInt16, address: String = "127.0.0.1", timeout: Int = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ClientError(what: "socket", code: errno) }
        var time = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        var peer = sockaddr_in()
        peer.sin_family = sa_family_t(AF_INET)
        peer.sin_port = port.bigEndian
        peer.sin_addr.s_addr = IPv4Address(address)!.value.bigEndian
        let connected = withUnsafePointer(to: &peer) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let code = errno
            close(fd)
            throw ClientError(what: "connect \(address):\(port)", code: code)
        }
    }

    deinit { close(fd) }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        guard Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else { throw ClientError(what: "send", code: errno) }
    }

    /// Everything until the responder closes; throws when nothing ends within the timeout.
    func readToEnd() throws -> [UInt8] {
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count < 0 {
                if errno == ECONNRESET { return result }
                throw ClientError(what: "recv", code: errno)
            }
            if count == 0 { return result }
            result += buffer[0..<count]
        }
    }

    /// Neither closed nor reset by the responder so far (nothing is ever sent unasked).
    var isOpen: Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_DONTWAIT | MSG_PEEK)) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
    }
}

private struct ClientError: Error, CustomStringConvertible {
    var what: String
    var code: Int32
    var description: String { "\(what): \(String(cString: strerror(code)))" }
}
