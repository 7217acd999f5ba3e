import Glibc

public struct SystemError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var code: Int32

    public init(_ operation: String, code: Int32 = errno) {
        self.operation = operation
        self.code = code
    }

    public var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// The directory holding vpnsup's sockets: created if missing, owned by root, mode 0700, so only
/// root can reach the management socket inside it. With a status group: group-owned, mode 0710,
/// so the group can reach the status socket (0660) and still not the management socket (0600).
public enum RuntimeDirectory {
    public static func prepare(_ path: String, statusGroup: UInt32? = nil) throws {
        var partial = ""
        for component in path.split(separator: "/") {
            partial += "/" + component
            if mkdir(partial, 0o755) != 0, errno != EEXIST { throw SystemError("mkdir \(partial)") }
        }
        guard chown(path, 0, statusGroup ?? 0) == 0 else { throw SystemError("chown \(path)") }
        guard chmod(path, statusGroup == nil ? 0o700 : 0o710) == 0 else { throw SystemError("chmod \(path)") }
    }
}

public enum GroupDatabase {
    /// The id of a group given by name or number; nil when no such group exists.
    public static func groupID(_ name: String) -> UInt32? {
        if let id = UInt32(name) { return id }
        var group = group()
        var result: UnsafeMutablePointer<group>?
        var buffer = [CChar](repeating: 0, count: 16384)
        let status = getgrnam_r(name, &group, &buffer, buffer.count, &result)
        guard status == 0, result != nil else { return nil }
        return group.gr_gid
    }
}

public enum TextFile {
    /// Reads a whole file as UTF-8; the error names the reason (missing, permission, not UTF-8...).
    public static func read(_ path: String, limit: Int = 1 << 20) -> Result<String, SystemError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(SystemError("open")) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(SystemError("read"))
            }
            if count == 0 { break }
            bytes += chunk[0..<count]
            if bytes.count > limit { return .failure(SystemError("read", code: EFBIG)) }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return .failure(SystemError("decode as UTF-8", code: EILSEQ))
        }
        return .success(text)
    }

    /// Permission bits of a file, or nil if it cannot be inspected.
    public static func mode(_ path: String) -> UInt32? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return UInt32(info.st_mode) & 0o7777
    }
}

public enum StandardError {
    /// One line on stderr, written with a single write(2).
    public static func writeLine(_ text: String) {
        var bytes = Array((text + "\n").utf8)
        bytes.withUnsafeMutableBytes { _ = write(2, $0.baseAddress, $0.count) }
    }
}

public enum Termination {
    public static func exit(_ code: Int32) -> Never { Glibc.exit(code) }
}

public enum FileCreation {
    /// umask 077 for vpnsup and what it spawns: sockets and files start private to root.
    public static func restrict() { umask(0o077) }
}

public enum ProcessIdentity {
    public static var current: Int32 { getpid() }
}
