import Glibc
import SystemSupport
import Logging

/// A swift-log handler that writes structured entries to systemd-journald over its native
/// protocol (a datagram of `KEY=value\n` fields to /run/systemd/journal/socket; a value holding
/// a newline goes as `KEY\n`, its length as 64-bit little-endian, the bytes, `\n`).
///
/// Fields: MESSAGE, PRIORITY (syslog numbers), SYSLOG_IDENTIFIER=vpnsup, CODE_FILE/LINE/FUNC, and
/// each metadata key as VPNSUP_<KEY> (upper case, other characters as `_`). A transition's `to`
/// also becomes VPNSUP_STATE, the state vpnsup is in after the entry.
///
/// A datagram the socket refuses (journald not running, or an entry too large) is written to
/// stderr as one line instead, so nothing is lost silently.
public struct JournalLogHandler: LogHandler {
    public static let defaultSocketPath = "/run/systemd/journal/socket"

    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public let label: String
    public let identifier: String
    public let socketPath: String

    public init(label: String, identifier: String = "vpnsup", socketPath: String = JournalLogHandler.defaultSocketPath) {
        self.label = label
        self.identifier = identifier
        self.socketPath = socketPath
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        let fields = Self.fields(level: event.level, message: event.message.description, metadata: merged,
                                 identifier: identifier, file: event.file, function: event.function, line: event.line)
        let datagram = Self.encode(fields)
        if !Self.send(datagram, to: socketPath) {
            let line = "\(event.level) \(label): \(event.message)\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
        }
    }

    /// The syslog priority of a swift-log level.
    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// A metadata key as a journal field name: VPNSUP_ and the key in upper case, with every
    /// character outside A-Z and 0-9 as `_`.
    public static func fieldName(forMetadataKey key: String) -> String {
        let mapped = key.uppercased().unicodeScalars.map { scalar -> Character in
            switch scalar {
            case "A"..."Z", "0"..."9": Character(scalar)
            default: "_"
            }
        }
        return "VPNSUP_" + String(mapped)
    }

    /// The entry's fields in order (metadata sorted by key, so entries are reproducible).
    public static func fields(level: Logger.Level, message: String, metadata: Logger.Metadata, identifier: String,
                              file: String, function: String, line: UInt) -> [(String, String)] {
        var fields: [(String, String)] = [
            ("MESSAGE", message),
            ("PRIORITY", String(priority(level))),
            ("SYSLOG_IDENTIFIER", identifier),
            ("CODE_FILE", file),
            ("CODE_LINE", String(line)),
            ("CODE_FUNC", function),
        ]
        for key in metadata.keys.sorted() {
            fields.append((fieldName(forMetadataKey: key), metadata[key]!.description))
        }
        if metadata["state"] == nil, let to = metadata["to"] {
            fields.append(("VPNSUP_STATE", to.description))
        }
        return fields
    }

    /// The native protocol's datagram for the fields.
    public static func encode(_ fields: [(String, String)]) -> [UInt8] {
        var bytes: [UInt8] = []
        for (name, value) in fields {
            bytes.append(contentsOf: Array(name.utf8))
            let data = Array(value.utf8)
            if data.contains(UInt8(ascii: "\n")) {
                bytes.append(UInt8(ascii: "\n"))
                var length = UInt64(data.count).littleEndian
                withUnsafeBytes(of: &length) { bytes.append(contentsOf: $0) }
            } else {
                bytes.append(UInt8(ascii: "="))
            }
            bytes.append(contentsOf: data)
            bytes.append(UInt8(ascii: "\n"))
        }
        return bytes
    }

    /// Sends one datagram to the AF_UNIX socket at `path`; false when it could not be sent.
    static func send(_ datagram: [UInt8], to path: String) -> Bool {
        let fd = socket(AF_UNIX, SocketFlags.datagram | SocketFlags.closeOnExec, 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in pathBytes.enumerated() { raw[index] = byte }
        }
        let sent = datagram.withUnsafeBytes { buffer in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, buffer.baseAddress, buffer.count, SocketFlags.noSignal, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        return sent == datagram.count
    }
}

/// Whether stderr is connected to the journal: systemd sets JOURNAL_STREAM to `device:inode` of
/// the stream it hands the service, and that must still be stderr (not redirected since).
public enum JournalStream {
    /// True when `value` (JOURNAL_STREAM) names the given device and inode, both decimal.
    public static func matches(_ value: String, device: UInt64, inode: UInt64) -> Bool {
        let parts = value.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let d = UInt64(parts[0]), let i = UInt64(parts[1]) else { return false }
        return d == device && i == inode
    }

    /// True when JOURNAL_STREAM is set and matches fstat(2) of stderr.
    public static func stderrIsJournal(environment: [String: String]) -> Bool {
        guard let value = environment["JOURNAL_STREAM"] else { return false }
        var status = stat()
        guard fstat(2, &status) == 0 else { return false }
        return matches(value, device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
    }
}
