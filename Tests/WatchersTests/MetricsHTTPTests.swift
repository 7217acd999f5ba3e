import Testing
@testable import Watchers

@Suite("Metrics HTTP")
struct MetricsHTTPTests {
    static let limit = 4096

    static func head(_ text: String) -> MetricsHTTP.Head { MetricsHTTP.head(Array(text.utf8), limit: limit) }

    static func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    @Test func aScrapeIsCompleteAtTheBlankLine() {
        let line = MetricsHTTP.RequestLine(method: "GET", target: "/metrics", version: "HTTP/1.1")
        #expect(Self.head("GET /metrics HTTP/1.1\r\nHost: 172.22.0.1:9477\r\nAccept: text/plain\r\n\r\n") == .complete(line))
        #expect(Self.head("GET /metrics HTTP/1.1\n\n") == .complete(line), "bare LF")
        #expect(Self.head("GET /metrics HTTP/1.1\r\n\r\n") == .complete(line))
        #expect(Self.head("GET /metrics HTTP/1.0\r\n\r\n") == .complete(.init(method: "GET", target: "/metrics", version: "HTTP/1.0")))
    }

    @Test func everyPrefixOfARequestIsIncomplete() {
        let request = Array("GET /metrics HTTP/1.1\r\nHost: 172.22.0.1:9477\r\nUser-Agent: Prometheus/2.53\r\n\r\n".utf8)
        for end in 0..<request.count {
            #expect(MetricsHTTP.head(Array(request[..<end]), limit: Self.limit) == .incomplete, "\(end) bytes")
        }
        #expect(MetricsHTTP.head(request, limit: Self.limit) != .incomplete)
    }

    @Test func malformedFirstLinesAreBadRequestsAtOnce() {
        for line in ["GET /metrics", "GET  /metrics HTTP/1.1", "get /metrics HTTP/1.1", "GET metrics HTTP/1.1",
                     "GET http://172.22.0.1/metrics HTTP/1.1", "GET /metrics FTP/1.1", "GET /met\u{1}rics HTTP/1.1",
                     "GET /métrics HTTP/1.1", "\u{16}\u{3}\u{1}"] {
            // Judged as soon as the line ends, without waiting for a head that may never come.
            #expect(Self.head(line + "\r\n") == .invalid(.badRequest), "\(line)")
        }
        #expect(Self.head("GET /metrics HTTP/2.0\r\n\r\n") == .invalid(.versionNotSupported))
        #expect(Self.head("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == .invalid(.badRequest))
    }

    @Test func theHeadMustFitTheLimit() {
        let limit = 64
        let long = "GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: 100)
        #expect(MetricsHTTP.head(Array(long.utf8), limit: limit) == .invalid(.headersTooLarge))
        #expect(MetricsHTTP.head(Array(String(repeating: "G", count: 64).utf8), limit: limit) == .invalid(.headersTooLarge),
                "a first line that never ends")
        #expect(MetricsHTTP.head(Array(String(repeating: "G", count: 63).utf8), limit: limit) == .incomplete)
        // Exactly at the limit: the head's last byte is byte 64.
        let exact = "GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: 64 - 23 - 3 - 4) + "\r\n\r\n"
        #expect(exact.utf8.count == 64)
        #expect(MetricsHTTP.head(Array(exact.utf8), limit: limit) != .invalid(.headersTooLarge))
        #expect(MetricsHTTP.head(Array(exact.utf8), limit: limit - 1) == .invalid(.headersTooLarge))
    }

    @Test func onlyGETOfMetricsGetsTheExposition() {
        let body = Array("vpnsup_state{state=\"TunnelUp\"} 1.0\n".utf8)
        let ok = Self.text(MetricsHTTP.response(to: Self.head("GET /metrics HTTP/1.1\r\n\r\n")) { body })
        #expect(ok == "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            + "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n" + Self.text(body))
        #expect(Self.text(MetricsHTTP.response(to: Self.head("GET /metrics?x=1 HTTP/1.1\r\n\r\n")) { body }).hasPrefix("HTTP/1.1 200 OK\r\n"))

        var asked = 0
        let exposition: () -> [UInt8]? = { asked += 1; return body }
        let expected: [(String, String)] = [
            ("POST /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\n"),
            ("HEAD /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\n"),
            ("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found\r\n"),
            ("GET /metrics/ HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found\r\n"),
            ("DELETE /status HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found\r\n"),
            ("GET /metrics HTTP/1.1\r\n", "HTTP/1.1 400 Bad Request\r\n"), // closed before the head ended
        ]
        for (request, prefix) in expected {
            let response = Self.text(MetricsHTTP.response(to: Self.head(request), exposition: exposition))
            #expect(response.hasPrefix(prefix), "\(request.debugDescription): \(response.debugDescription)")
            #expect(response.contains("Connection: close\r\n"))
        }
        #expect(asked == 0, "the exposition is rendered for GET /metrics only")
    }

    @Test func nothingToShowIs503() {
        let response = Self.text(MetricsHTTP.response(to: Self.head("GET /metrics HTTP/1.1\r\n\r\n")) { nil })
        #expect(response == "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            + "Content-Length: 24\r\nConnection: close\r\n\r\n503 Service Unavailable\n")
    }
}
