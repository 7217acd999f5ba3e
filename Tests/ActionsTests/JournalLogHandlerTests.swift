import Glibc
import Logging
import Testing
@testable import Actions

/// The journal handler against a real AF_UNIX datagram socket standing in for journald's.
@Suite struct JournalLogHandlerTests {
    @Test func transitionEntryReachesTheSocketInTheNativeProtocol() throws {
        let directory = ProcFS.temporaryDirectory()
        defer { ProcFS.removeTree(directory) }
        let path = directory + "/journal.socket"
        let fd = try JournalTestSocket.bind(path)
        defer { close(fd) }

        var handler = JournalLogHandler(label: "vpnsup", socketPath: path)
        handler.logLevel = .trace
        let logger = Logger(label: "vpnsup") { _ in handler }
        logger.notice("TunnelUp -> Killswitched on tunnelDown\nsecond line",
                      metadata: ["from": "TunnelUp", "to": "Killswitched", "event": "tunnelDown"])

        let fields = try JournalTestSocket.parse(JournalTestSocket.receive(fd))
        #expect(fields["MESSAGE"] == ["TunnelUp -> Killswitched on tunnelDown\nsecond line"])
        #expect(fields["PRIORITY"] == ["5"])
        #expect(fields["SYSLOG_IDENTIFIER"] == ["vpnsup"])
        #expect(fields["VPNSUP_EVENT"] == ["tunnelDown"])
        #expect(fields["VPNSUP_FROM"] == ["TunnelUp"])
        #expect(fields["VPNSUP_TO"] == ["Killswitched"])
        #expect(fields["VPNSUP_STATE"] == ["Killswitched"])
        #expect(fields["CODE_FUNC"]?.count == 1)
        // Nothing but these fields: no metadata leaks under other names.
        #expect(Set(fields.keys) == ["MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC",
                                     "VPNSUP_EVENT", "VPNSUP_FROM", "VPNSUP_TO", "VPNSUP_STATE"])
    }

    @Test func prioritiesFollowSyslog() throws {
        let directory = ProcFS.temporaryDirectory()
        defer { ProcFS.removeTree(directory) }
        let path = directory + "/journal.socket"
        let fd = try JournalTestSocket.bind(path)
        defer { close(fd) }
        var handler = JournalLogHandler(label: "vpnsup", socketPath: path)
        handler.logLevel = .trace
        let logger = Logger(label: "vpnsup") { _ in handler }
        let expected: [(Logger.Level, String)] = [(.trace, "7"), (.debug, "7"), (.info, "6"), (.notice, "5"),
                                                  (.warning, "4"), (.error, "3"), (.critical, "2")]
        for (level, priority) in expected {
            logger.log(level: level, "plain message")
            let fields = try JournalTestSocket.parse(JournalTestSocket.receive(fd))
            #expect(fields["PRIORITY"] == [priority], "\(level)")
            #expect(fields["MESSAGE"] == ["plain message"])
            #expect(fields["VPNSUP_STATE"] == nil)
        }
    }

    @Test func metadataKeysBecomeUpperCaseFieldNames() {
        #expect(JournalLogHandler.fieldName(forMetadataKey: "event") == "VPNSUP_EVENT")
        #expect(JournalLogHandler.fieldName(forMetadataKey: "remote-host.v4") == "VPNSUP_REMOTE_HOST_V4")
    }

    @Test func multiLineValuesUseTheBinaryLengthForm() {
        let bytes = JournalLogHandler.encode([("MESSAGE", "a\nb"), ("PRIORITY", "6")])
        #expect(bytes == Array("MESSAGE\n".utf8) + [3, 0, 0, 0, 0, 0, 0, 0] + Array("a\nb\n".utf8) + Array("PRIORITY=6\n".utf8))
    }

    @Test func journalStreamMatchesOnlyTheSameDeviceAndInode() {
        #expect(JournalStream.matches("64768:123456", device: 64768, inode: 123456))
        #expect(!JournalStream.matches("64768:123457", device: 64768, inode: 123456))
        #expect(!JournalStream.matches("64769:123456", device: 64768, inode: 123456))
        #expect(!JournalStream.matches("", device: 64768, inode: 123456))
        #expect(!JournalStream.matches("64768", device: 64768, inode: 123456))
        #expect(!JournalStream.matches("64768:123456:1", device: 64768, inode: 123456))
        #expect(!JournalStream.matches("x:123456", device: 64768, inode: 123456))
    }

    @Test func stderrIsNotTheJournalWithoutOrWithAStaleJournalStream() {
        #expect(!JournalStream.stderrIsJournal(environment: [:]))
        var status = stat()
        #expect(fstat(2, &status) == 0)
        let matching = "\(status.st_dev):\(status.st_ino)"
        #expect(JournalStream.stderrIsJournal(environment: ["JOURNAL_STREAM": matching]))
        #expect(!JournalStream.stderrIsJournal(environment: ["JOURNAL_STREAM": "\(status.st_dev):\(status.st_ino &+ 1)"]))
    }
}

enum JournalTestSocket {
    struct Failure: Error { let what: String; let errno: Int32 }

    static func bind(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, 2 | O_CLOEXEC, 0)  // SOCK_DGRAM
        guard fd >= 0 else { throw Failure(what: "socket", errno: errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else { close(fd); throw Failure(what: "bind", errno: errno) }
        // A test that sends nothing fails instead of hanging.
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func receive(_ fd: Int32) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count >= 0 else { throw Failure(what: "recv", errno: errno) }
        return Array(buffer[..<count])
    }

    /// Parses journald's native protocol: `KEY=value\n`, or `KEY\n` + 64-bit LE length + value + `\n`.
    static func parse(_ bytes: [UInt8]) throws -> [String: [String]] {
        var fields: [String: [String]] = [:]
        var index = 0
        while index < bytes.count {
            guard let end = bytes[index...].firstIndex(where: { $0 == UInt8(ascii: "=") || $0 == UInt8(ascii: "\n") }) else {
                throw Failure(what: "unterminated field", errno: 0)
            }
            let name = String(decoding: bytes[index..<end], as: UTF8.self)
            let value: ArraySlice<UInt8>
            if bytes[end] == UInt8(ascii: "=") {
                guard let newline = bytes[(end + 1)...].firstIndex(of: UInt8(ascii: "\n")) else {
                    throw Failure(what: "unterminated value", errno: 0)
                }
                value = bytes[(end + 1)..<newline]
                index = newline + 1
            } else {
                guard end + 9 <= bytes.count else { throw Failure(what: "short length", errno: 0) }
                var length = 0
                for offset in (0..<8).reversed() { length = length << 8 | Int(bytes[end + 1 + offset]) }
                let start = end + 9
                guard start + length < bytes.count, bytes[start + length] == UInt8(ascii: "\n") else {
                    throw Failure(what: "bad binary value", errno: 0)
                }
                value = bytes[start..<(start + length)]
                index = start + length + 1
            }
            fields[name, default: []].append(String(decoding: value, as: UTF8.self))
        }
        return fields
    }
}
