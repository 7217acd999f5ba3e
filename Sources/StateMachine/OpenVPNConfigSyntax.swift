/// One option of an OpenVPN configuration file, as OpenVPN 2.6 reads it (`read_config_file`,
/// `parse_line`, `check_inline_file` and `add_option` in its options.c).
public struct OpenVPNOption: Hashable, Sendable {
    /// The parameters as OpenVPN splits them (quotes and escapes resolved), `--` dropped from the
    /// first; at most 16, as OpenVPN ignores the rest of a line.
    public var words: [String]
    /// Line of the file the option starts on (1-based).
    public var line: Int
    /// An inline block (`<ca>` ... `</ca>`): its text verbatim, each line with its line break.
    public var body: String?
    /// Physical lines the option occupies (1, or for a block its opening line, body and closing line).
    public var lineCount: Int
    /// The options of a `<connection>` block.
    public var connection: [OpenVPNOption]?

    public init(words: [String], line: Int, body: String? = nil, lineCount: Int = 1, connection: [OpenVPNOption]? = nil) {
        self.words = words
        self.line = line
        self.body = body
        self.lineCount = lineCount
        self.connection = connection
    }

    /// `setenv opt NAME ...` is option NAME to OpenVPN (it only makes an unknown NAME a warning),
    /// outside pushed options: the prefix is stripped once.
    public var isSetenvOpt: Bool { words.count >= 2 && words[0] == "setenv" && words[1] == "opt" }

    /// The option OpenVPN acts on. Names are case-sensitive to OpenVPN.
    public var name: String {
        if isSetenvOpt { return words.count >= 3 ? words[2] : "setenv opt" }
        return words.first ?? ""
    }

    /// The parameters after `name`.
    public var arguments: [String] { Array(words.dropFirst(isSetenvOpt ? 3 : 1)) }

    /// How it reads in a message: the words (quoted where needed); a block by its tag only, since
    /// its body may hold secrets (`<auth-user-pass>`, keys).
    public var written: String {
        if body != nil { return "<\(words.first ?? "")>" }
        return words.map(OpenVPNConfigSyntax.quoted).joined(separator: " ")
    }
}

/// Why OpenVPN would not read a file (it stops with an "Options error" at the line).
public struct OpenVPNSyntaxError: Error, Hashable, Sendable, CustomStringConvertible {
    public var line: Int
    public var message: String

    public init(line: Int, message: String) {
        self.line = line
        self.message = message
    }

    public var description: String { "line \(line): \(message)" }
}

/// Reads OpenVPN configuration text the way OpenVPN 2.6 does, byte for byte:
///
/// - lines end at LF only (a CR is white space, as for OpenVPN's `isspace`); a UTF-8 BOM is
///   skipped on the first line of the file only;
/// - OpenVPN reads a line with `fgets` into 256 bytes: a line of 255 bytes or more with its LF is
///   an error ("Maximum option line length"), so is a NUL (OpenVPN would cut the line there);
/// - `parse_line`: words split at white space; `#` or `;` at the start of a word ends the line;
///   "..." with backslash escapes, '...' without; outside single quotes a backslash may only
///   escape `\`, `"` or white space; words past the 16th are ignored;
/// - a line holding a lone `<tag>` opens an inline block whose body runs to the first line that
///   starts, after white space, with `</tag>` (OpenVPN compares 255-byte pieces of a longer line);
/// - `<connection>` bodies are read again as options, each line at most 255 bytes.
///
/// The vetted text vpnsup hands OpenVPN is written back from what this reads (`quoted`, inline
/// bodies verbatim), so what OpenVPN sees is what vpnsup vetted even where a file is ambiguous.
public enum OpenVPNConfigSyntax {
    /// OpenVPN's `MAX_PARMS`.
    public static let maximumWords = 16
    /// A line read by OpenVPN's `fgets(line, 257, ...)` must be shorter than this, LF included.
    public static let lineLimit = 256

    public static func parse(_ text: String) -> Result<[OpenVPNOption], OpenVPNSyntaxError> {
        var bytes = Array(text.utf8)
        var start = 0
        // OpenVPN skips a BOM on line 1 after the length check, so it still counts towards it.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) {
            let firstLength = bytes.firstIndex(of: 0x0A).map { $0 + 1 } ?? bytes.count
            if firstLength >= lineLimit {
                return .failure(OpenVPNSyntaxError(line: 1, message: "a line of \(firstLength) bytes: OpenVPN reads at most \(lineLimit - 1)"))
            }
            start = 3
        }
        if let nul = bytes.firstIndex(of: 0) {
            let line = bytes[..<nul].reduce(1) { $1 == 0x0A ? $0 + 1 : $0 }
            return .failure(OpenVPNSyntaxError(line: line, message: "a NUL byte, where OpenVPN would cut the line"))
        }
        bytes.removeFirst(start)
        var reader = LineReader(bytes: bytes, firstLine: 1)
        return readOptions(&reader, inConnection: false)
    }

    private struct LineReader {
        let bytes: [UInt8]
        var offset = 0
        var line: Int

        init(bytes: [UInt8], firstLine: Int) {
            self.bytes = bytes
            self.line = firstLine
        }

        var atEnd: Bool { offset >= bytes.count }

        /// The next physical line, with its LF if it has one.
        mutating func next() -> ArraySlice<UInt8>? {
            guard !atEnd else { return nil }
            let end = bytes[offset...].firstIndex(of: 0x0A).map { $0 + 1 } ?? bytes.count
            defer { offset = end; line += 1 }
            return bytes[offset..<end]
        }
    }

    private static func readOptions(_ reader: inout LineReader, inConnection: Bool) -> Result<[OpenVPNOption], OpenVPNSyntaxError> {
        var options: [OpenVPNOption] = []
        while !reader.atEnd {
            let lineNumber = reader.line
            let line = reader.next()!
            if line.count >= lineLimit {
                return .failure(OpenVPNSyntaxError(line: lineNumber, message: "a line of \(line.count) bytes: OpenVPN reads at most \(lineLimit - 1)"))
            }
            var words: [String]
            switch OpenVPNConfigSyntax.words(of: line) {
            case .success(let parsed): words = parsed
            case .failure(let error): return .failure(OpenVPNSyntaxError(line: lineNumber, message: error.message))
            }
            guard !words.isEmpty else { continue }
            // A backslash before the line break puts the break into the word (OpenVPN would keep
            // it); no word written back could hold it on one line.
            if words.contains(where: { $0.utf8.contains(0x0A) }) {
                return .failure(OpenVPNSyntaxError(line: lineNumber, message: "a backslash before the line break"))
            }
            if words[0].utf8.count >= 3, words[0].hasPrefix("--") { words[0].removeFirst(2) }
            // OpenVPN looks for a block on the first word alone, after dropping its `--`.
            if words.count == 1, words[0].hasPrefix("<"), words[0].hasSuffix(">"), words[0].utf8.count >= 2 {
                let tag = String(words[0].dropFirst().dropLast())
                guard !tag.isEmpty, tag.utf8.allSatisfy({ isTagByte($0) }) else {
                    return .failure(OpenVPNSyntaxError(line: lineNumber, message: "\(words[0]) is no inline block OpenVPN knows (a stray closing tag, or an odd name)"))
                }
                let close = Array("</\(tag)>".utf8)
                var body: [UInt8] = []
                var closed = false
                while let bodyLine = reader.next() {
                    if inConnection, bodyLine.count >= lineLimit {
                        return .failure(OpenVPNSyntaxError(line: reader.line - 1, message: "a line of \(bodyLine.count) bytes in a <connection> block: OpenVPN reads at most \(lineLimit - 1)"))
                    }
                    // OpenVPN reads a block's lines in pieces of up to 255 bytes (fgets into 256):
                    // a piece that starts, after white space, with the closing tag ends the block.
                    var piece = bodyLine.startIndex
                    while piece < bodyLine.endIndex {
                        let pieceEnd = inConnection ? bodyLine.endIndex : min(piece + lineLimit - 1, bodyLine.endIndex)
                        let content = bodyLine[piece..<pieceEnd].drop(while: { isSpace($0) })
                        if content.starts(with: close) {
                            if pieceEnd != bodyLine.endIndex || piece != bodyLine.startIndex {
                                return .failure(OpenVPNSyntaxError(line: reader.line - 1, message: "</\(tag)> inside a line of \(bodyLine.count) bytes"))
                            }
                            closed = true
                            break
                        }
                        piece = pieceEnd
                    }
                    if closed { break }
                    body += bodyLine
                }
                guard closed else {
                    return .failure(OpenVPNSyntaxError(line: lineNumber, message: "<\(tag)> has no </\(tag)> before the end of the file"))
                }
                var option = OpenVPNOption(words: [tag], line: lineNumber, body: String(decoding: body, as: UTF8.self),
                                           lineCount: reader.line - lineNumber)
                if tag == "connection" {
                    if inConnection {
                        return .failure(OpenVPNSyntaxError(line: lineNumber, message: "a <connection> block inside a <connection> block"))
                    }
                    var inner = LineReader(bytes: body, firstLine: lineNumber + 1)
                    switch readOptions(&inner, inConnection: true) {
                    case .success(let inside): option.connection = inside
                    case .failure(let error): return .failure(error)
                    }
                }
                options.append(option)
                continue
            }
            options.append(OpenVPNOption(words: words, line: lineNumber))
        }
        return .success(options)
    }

    /// OpenVPN's `isspace` in the C locale (NUL is refused before parsing).
    static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || (0x09...0x0D).contains(byte)
    }

    private static func isTagByte(_ byte: UInt8) -> Bool {
        (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte) || byte == 0x2D
    }

    private enum State { case initial, unquoted, doubleQuoted, singleQuoted }

    /// `parse_line`: the words of one line, or the error OpenVPN reports.
    static func words(of line: ArraySlice<UInt8>) -> Result<[String], OpenVPNSyntaxError> {
        func failure(_ message: String) -> Result<[String], OpenVPNSyntaxError> { .failure(OpenVPNSyntaxError(line: 0, message: message)) }
        var words: [String] = []
        var word: [UInt8] = []
        var state = State.initial
        var backslash = false
        // The terminating NUL OpenVPN's loop sees is white space to it.
        for byte in line + [0] {
            if !backslash && byte == 0x5C && state != .singleQuoted {
                backslash = true
                continue
            }
            var output: UInt8? // OpenVPN's `out`; its 0 (a NUL) is no output
            var done = false
            switch state {
            case .initial:
                if !isSpace(byte) && byte != 0 {
                    if byte == 0x3B || byte == 0x23 { return .success(words) } // ; or #: comment
                    if !backslash && byte == 0x22 {
                        state = .doubleQuoted
                    } else if !backslash && byte == 0x27 {
                        state = .singleQuoted
                    } else {
                        output = byte
                        state = .unquoted
                    }
                }
            case .unquoted:
                if !backslash && (isSpace(byte) || byte == 0) { done = true } else if byte != 0 { output = byte }
            case .doubleQuoted:
                if !backslash && byte == 0x22 { done = true } else if byte != 0 { output = byte }
            case .singleQuoted:
                if byte == 0x27 { done = true } else if byte != 0 { output = byte }
            }
            if done {
                words.append(String(decoding: word, as: UTF8.self))
                word = []
                state = .initial
            }
            if backslash, let escaped = output, !(escaped == 0x5C || escaped == 0x22 || isSpace(escaped)) {
                return failure("a backslash before '\(String(decoding: [escaped], as: UTF8.self))': OpenVPN allows \\\\, \\\" and \\ before a space only (write Windows paths with double backslashes)")
            }
            backslash = false
            if let output { word.append(output) }
            if words.count >= maximumWords { return .success(words) }
        }
        switch state {
        case .initial: return .success(words)
        case .doubleQuoted: return failure("no closing quotation (\")")
        case .singleQuoted: return failure("no closing single quotation (')")
        // A backslash before the end of the last line, which has no line break.
        case .unquoted: return failure("a backslash at the end of the file")
        }
    }

    /// A word written so that `parse_line` reads it back unchanged: bare when it can be, else in
    /// double quotes with `\` and `"` escaped. A word that starts with a BOM is quoted too: on
    /// the first line, OpenVPN would skip the BOM and read another word (`\u{FEFF}up` as `up`).
    public static func quoted(_ word: String) -> String {
        let bytes = Array(word.utf8)
        let bare = !bytes.isEmpty && !bytes.contains(where: { isSpace($0) || $0 == 0x5C })
            && ![0x22, 0x27, 0x23, 0x3B].contains(bytes[0]) && !bytes.starts(with: [0xEF, 0xBB, 0xBF])
        if bare { return word }
        var result = "\""
        for character in word.unicodeScalars {
            if character == "\\" || character == "\"" { result.unicodeScalars.append("\\") }
            result.unicodeScalars.append(character)
        }
        return result + "\""
    }
}
