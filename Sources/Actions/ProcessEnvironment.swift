import Glibc
import StateMachine

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

public enum StandardError {
    /// One line on stderr, written with a single write(2); a control character in `text` (a line
    /// break from a configuration value) is escaped, so it stays one line.
    public static func writeLine(_ text: String) {
        var bytes = Array((oneLine(text) + "\n").utf8)
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
