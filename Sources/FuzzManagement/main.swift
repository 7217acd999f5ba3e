import FuzzSupport
import Watchers

// The OpenVPN management stream: arbitrary bytes, fed whole and in chunks. Besides not trapping,
// the parser must give the same messages however the stream is split, and quoting a value for a
// command must never let a line break through.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzManagementParser(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)

    var whole = ManagementParser()
    let expected = whole.feed(bytes) + whole.finish()

    // Chunk sizes 1...16, taken from the input itself so libFuzzer can steer them.
    var chunked = ManagementParser()
    var messages: [ManagementMessage] = []
    var offset = 0
    while offset < bytes.count {
        let length = min(bytes.count - offset, 1 + Int(bytes[offset] & 0x0f))
        messages += chunked.feed(bytes[offset ..< offset + length])
        offset += length
    }
    messages += chunked.finish()
    invariant(messages == expected, "chunking changed the messages: \(messages) vs \(expected)")

    // A small cap reaches the over-long line path on short inputs.
    var capped = ManagementParser(maxLineLength: 8)
    for message in capped.feed(bytes) + capped.finish() {
        if case .other(kind: "PASSWORD", let text) = message, text.hasPrefix("Auth-Token:") {
            invariant(text == "Auth-Token:<redacted>", "an auth token escaped redaction: \(text)")
        }
    }
    for message in expected {
        if case .other(kind: "PASSWORD", let text) = message, text.hasPrefix("Auth-Token:") {
            invariant(text == "Auth-Token:<redacted>", "an auth token escaped redaction: \(text)")
        }
    }

    let value = String(decoding: bytes, as: UTF8.self)
    if let quoted = managementQuoted(value) {
        invariant(!quoted.unicodeScalars.contains { $0 == "\r" || $0 == "\n" || $0 == "\0" },
                  "a quoted value holds a line break: \(quoted.debugDescription)")
        invariant(unquoted(quoted) == value, "quoting does not round-trip: \(quoted.debugDescription)")
    } else {
        invariant(value.unicodeScalars.contains { $0 == "\r" || $0 == "\n" || $0 == "\0" },
                  "a harmless value was refused: \(value.debugDescription)")
    }
    return 0
}

/// OpenVPN's reading of a quoted parameter: drop the quotes, a backslash takes the next character.
func unquoted(_ text: String) -> String? {
    var scalars = Array(text.unicodeScalars)
    guard scalars.count >= 2, scalars.first == "\"", scalars.last == "\"" else { return nil }
    scalars = Array(scalars.dropFirst().dropLast())
    var result = String.UnicodeScalarView()
    var escaped = false
    for scalar in scalars {
        if escaped {
            result.append(scalar)
            escaped = false
        } else if scalar == "\\" {
            escaped = true
        } else if scalar == "\"" {
            return nil // an unescaped quote would end the parameter early
        } else {
            result.append(scalar)
        }
    }
    return escaped ? nil : String(result)
}

runLibFuzzer(fuzzManagementParser)
