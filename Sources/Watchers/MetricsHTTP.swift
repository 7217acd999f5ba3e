/// The little HTTP/1.x that serving `GET /metrics` needs, as pure functions over bytes: the request
/// head's first line, and whole responses. One request per connection, answered and closed.
public enum MetricsHTTP {
    public static let path = "/metrics"
    /// The Prometheus text exposition format, version 0.0.4 (what swift-prometheus writes).
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public struct Status: Hashable, Sendable {
        public var code: Int
        public var reason: String

        public static let ok = Status(code: 200, reason: "OK")
        public static let badRequest = Status(code: 400, reason: "Bad Request")
        public static let notFound = Status(code: 404, reason: "Not Found")
        public static let methodNotAllowed = Status(code: 405, reason: "Method Not Allowed")
        public static let headersTooLarge = Status(code: 431, reason: "Request Header Fields Too Large")
        public static let unavailable = Status(code: 503, reason: "Service Unavailable")
        public static let versionNotSupported = Status(code: 505, reason: "HTTP Version Not Supported")
    }

    /// `GET /metrics HTTP/1.1`
    public struct RequestLine: Hashable, Sendable {
        public var method: String
        public var target: String
        public var version: String
    }

    public enum Head: Hashable, Sendable {
        /// The blank line that ends the head has not arrived yet, and the limit is not reached.
        case incomplete
        case complete(RequestLine)
        /// Answer with this status and close.
        case invalid(Status)
    }

    /// Judges what a client has sent so far. The head (up to its blank line, CRLF or bare LF)
    /// must fit in `limit` bytes; a malformed first line is refused as soon as it is complete.
    public static func head(_ bytes: [UInt8], limit: Int) -> Head {
        guard let firstEnd = bytes.firstIndex(of: UInt8(ascii: "\n")) else {
            return bytes.count >= limit ? .invalid(.headersTooLarge) : .incomplete
        }
        guard firstEnd < limit else { return .invalid(.headersTooLarge) }
        var lineBytes = bytes[..<firstEnd]
        if lineBytes.last == UInt8(ascii: "\r") { lineBytes = lineBytes.dropLast() }
        guard let line = requestLine(lineBytes) else { return .invalid(.badRequest) }
        guard line.version == "HTTP/1.1" || line.version == "HTTP/1.0" else { return .invalid(.versionNotSupported) }
        guard let end = headEnd(bytes) else { return bytes.count >= limit ? .invalid(.headersTooLarge) : .incomplete }
        return end < limit ? .complete(line) : .invalid(.headersTooLarge)
    }

    /// The index of the last byte of the head's blank line ("\n\n" or "\n\r\n"), if it has come.
    static func headEnd(_ bytes: [UInt8]) -> Int? {
        let newline = UInt8(ascii: "\n"), carriageReturn = UInt8(ascii: "\r")
        for index in bytes.indices where bytes[index] == newline {
            if index + 1 < bytes.count, bytes[index + 1] == newline { return index + 1 }
            if index + 2 < bytes.count, bytes[index + 1] == carriageReturn, bytes[index + 2] == newline { return index + 2 }
        }
        return nil
    }

    /// `METHOD SP origin-form SP HTTP/x.y`, printable ASCII only.
    static func requestLine(_ bytes: ArraySlice<UInt8>) -> RequestLine? {
        guard bytes.allSatisfy({ (0x21...0x7e).contains($0) || $0 == 0x20 }) else { return nil }
        let parts = bytes.split(separator: 0x20, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty,
              parts[0].allSatisfy({ (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) }),
              parts[1].first == UInt8(ascii: "/"), parts[2].starts(with: Array("HTTP/".utf8)) else { return nil }
        return RequestLine(method: String(decoding: parts[0], as: UTF8.self), target: String(decoding: parts[1], as: UTF8.self),
                           version: String(decoding: parts[2], as: UTF8.self))
    }

    /// The whole response to `head`. `exposition` is asked only for `GET /metrics`; nil from it
    /// (nothing to show yet) is 503.
    public static func response(to head: Head, exposition: () -> [UInt8]?) -> [UInt8] {
        switch head {
        case .incomplete:
            return response(.badRequest)
        case .invalid(let status):
            return response(status)
        case .complete(let line):
            let path = line.target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
            guard path == Self.path else { return response(.notFound) }
            guard line.method == "GET" else { return response(.methodNotAllowed, headers: [("Allow", "GET")]) }
            guard let body = exposition() else { return response(.unavailable) }
            return response(.ok, headers: [("Content-Type", contentType)], body: body)
        }
    }

    /// A response that closes the connection; an error's body is its reason, as text.
    public static func response(_ status: Status, headers: [(String, String)] = [], body: [UInt8]? = nil) -> [UInt8] {
        let content = body ?? Array("\(status.code) \(status.reason)\n".utf8)
        var all = headers
        if !all.contains(where: { $0.0 == "Content-Type" }) { all.append(("Content-Type", "text/plain; charset=utf-8")) }
        all += [("Content-Length", "\(content.count)"), ("Connection", "close")]
        var text = "HTTP/1.1 \(status.code) \(status.reason)\r\n"
        for (name, value) in all { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        return Array(text.utf8) + content
    }
}
