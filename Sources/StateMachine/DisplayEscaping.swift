/// `value` safe to echo inside one line of a log, an error or a status: control characters
/// (C0, DEL, C1, and the Unicode line and paragraph separators) become escapes, and so does the
/// backslash, so an escape in the output always came from here. An `IP_ADDR` holding a newline
/// then prints `\n` instead of starting a second, forged line.
///
/// `\n`, `\r`, `\t`, `\0` and `\\` as in C; any other such character as `\u{1B}`.
public func escapedForDisplay(_ value: some StringProtocol) -> String {
    var result = ""
    result.reserveCapacity(value.utf8.count)
    for scalar in value.unicodeScalars {
        switch scalar {
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case "\0": result += "\\0"
        case _ where isControl(scalar):
            result += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
        default:
            result.unicodeScalars.append(scalar)
        }
    }
    return result
}

/// `line` as it is when it holds no control character, else `escapedForDisplay(line)`. For a
/// line put together from parts that may have been escaped already (a log message quoting an
/// error): those are not escaped twice, and a raw line break never gets through.
public func oneLine(_ line: String) -> String {
    line.unicodeScalars.contains(where: isControl) ? escapedForDisplay(line) : line
}

private func isControl(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.value {
    case 0x00 ... 0x1F, 0x7F ... 0x9F, 0x2028, 0x2029: true
    default: false
    }
}
