import Glibc
import StateMachine
import SystemSupport

/// Why RUNTIME_DIR cannot be used: the path at fault (RUNTIME_DIR itself or one of its parents)
/// and what is wrong with it.
public struct RuntimeDirectoryError: Error, Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var problem: String

    public var description: String { "\(escapedForDisplay(path)) \(problem)" }
}

/// The directory holding vpnsup's sockets: created if missing, owned by root, mode 0700, so only
/// root can reach the management socket inside it. With a status group: group-owned, mode 0710,
/// so the group can reach the status socket (0660) and still not the management socket (0600).
///
/// Whoever controls the directory or any directory above it could swap the sockets for their own
/// (and be handed OpenVPN's management connection, or serve a forged status). So the path is
/// walked from `/` one directory descriptor at a time (openat with O_NOFOLLOW), never looked up
/// as a whole, and each directory on the way must be root's and writable by root alone:
///
/// - A parent writable by others is accepted only when it is sticky and owned by root, like
///   `/tmp`: there nobody else can rename or remove what root put in it, and what another user
///   put there first (a directory or symlink of theirs) fails the next step's owner check.
/// - A symlink among the parents is followed only if root owns it (`/var/run` -> `/run`): a
///   symlink of another user's could be pointed elsewhere after the check.
/// - RUNTIME_DIR itself must not be a symlink, and an existing one must already be root's: it is
///   never chowned away from someone else.
/// - The owner and mode are set with fchown/fchmod on the directory's own descriptor.
public enum RuntimeDirectory {
    public static func prepare(_ path: String, statusGroup: UInt32? = nil) throws(RuntimeDirectoryError) {
        guard path.hasPrefix("/") else { throw RuntimeDirectoryError(path: path, problem: "is not an absolute path") }
        var pending = path.split(separator: "/").map(String.init).filter { $0 != "." }
        guard let name = pending.popLast() else {
            throw RuntimeDirectoryError(path: path, problem: "is the root directory, not one of vpnsup's own")
        }
        guard name != ".." else { throw RuntimeDirectoryError(path: path, problem: "ends in '..': name the directory itself") }
        var walk = try Walk()
        while !pending.isEmpty {
            try walk.enter(pending.removeFirst(), then: &pending)
        }
        let directory = try walk.finalDirectory(name)
        let finalPath = walk.path(of: name)
        func fail(_ what: String) -> RuntimeDirectoryError {
            RuntimeDirectoryError(path: finalPath, problem: "\(what): \(SystemError.text(errno))")
        }
        guard fchown(directory.rawValue, 0, statusGroup ?? 0) == 0 else { throw fail("cannot be given to root") }
        guard fchmod(directory.rawValue, statusGroup == nil ? 0o700 : 0o710) == 0 else { throw fail("cannot be made private") }
    }

    /// The walk from `/`: the directory reached so far, its path as walked, links followed.
    private struct Walk {
        private var current: OwnedDescriptor
        private var currentPath = ""
        private var linksFollowed = 0

        init() throws(RuntimeDirectoryError) {
            let root = Glibc.open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard root >= 0 else { throw RuntimeDirectoryError(path: "/", problem: "cannot be opened: \(SystemError.text(errno))") }
            current = OwnedDescriptor(root)
            try Self.check(current, "/")
        }

        func path(of name: String) -> String { currentPath + "/" + name }

        /// Steps into parent `name` (creating it if missing), or splices a root-owned symlink's
        /// target into `pending`.
        mutating func enter(_ name: String, then pending: inout [String]) throws(RuntimeDirectoryError) {
            let here = path(of: name)
            switch Self.lookUp(current, name) {
            case .missing:
                // umask 077 applies: a new parent is root's, mode 0700.
                guard mkdirat(current.rawValue, name, 0o755) == 0 || errno == EEXIST else {
                    throw RuntimeDirectoryError(path: here, problem: "cannot be made: \(SystemError.text(errno))")
                }
                try enter(name, then: &pending)
            case .symlink(let owner):
                guard owner == 0 else {
                    throw RuntimeDirectoryError(path: here, problem: "is a symlink owned by uid \(owner), who could point it elsewhere")
                }
                linksFollowed += 1
                guard linksFollowed <= 40 else { throw RuntimeDirectoryError(path: here, problem: "is one symlink too many (40 followed)") }
                let target = try Self.target(of: current, name, here)
                if target.hasPrefix("/") {
                    self = try Walk(linksFollowed: linksFollowed)
                }
                pending.insert(contentsOf: target.split(separator: "/").map(String.init).filter { $0 != "." }, at: 0)
            case .other(let mode):
                guard mode & S_IFMT == S_IFDIR else { throw RuntimeDirectoryError(path: here, problem: "is not a directory") }
                let next = try Self.open(current, name, here)
                try Self.check(next, here)
                current = next
                currentPath = name == ".." ? String(currentPath[..<(currentPath.lastIndex(of: "/") ?? currentPath.startIndex)]) : here
            case .failed(let code):
                throw RuntimeDirectoryError(path: here, problem: "cannot be inspected: \(SystemError.text(code))")
            }
        }

        /// RUNTIME_DIR itself, created if missing: a directory, not a symlink, and root's.
        mutating func finalDirectory(_ name: String) throws(RuntimeDirectoryError) -> OwnedDescriptor {
            let here = path(of: name)
            switch Self.lookUp(current, name) {
            case .missing:
                guard mkdirat(current.rawValue, name, 0o700) == 0 || errno == EEXIST else {
                    throw RuntimeDirectoryError(path: here, problem: "cannot be made: \(SystemError.text(errno))")
                }
                return try finalDirectory(name)
            case .symlink:
                throw RuntimeDirectoryError(path: here, problem: "is a symlink: RUNTIME_DIR must name the directory itself")
            case .other(let mode):
                guard mode & S_IFMT == S_IFDIR else { throw RuntimeDirectoryError(path: here, problem: "is not a directory") }
                let directory = try Self.open(current, name, here)
                let info = try Self.status(directory, here)
                guard info.st_uid == 0 else {
                    throw RuntimeDirectoryError(path: here, problem: "is owned by uid \(info.st_uid), not root: remove it or name another")
                }
                return directory
            case .failed(let code):
                throw RuntimeDirectoryError(path: here, problem: "cannot be inspected: \(SystemError.text(code))")
            }
        }

        private init(linksFollowed: Int) throws(RuntimeDirectoryError) {
            try self.init()
            self.linksFollowed = linksFollowed
        }

        private enum Entry {
            case missing
            case symlink(owner: UInt32)
            case other(mode: mode_t)
            case failed(Int32)
        }

        private static func lookUp(_ directory: OwnedDescriptor, _ name: String) -> Entry {
            var info = stat()
            guard fstatat(directory.rawValue, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
                return errno == ENOENT ? .missing : .failed(errno)
            }
            return info.st_mode & S_IFMT == S_IFLNK ? .symlink(owner: info.st_uid) : .other(mode: info.st_mode)
        }

        /// O_NOFOLLOW: if `name` was swapped for a symlink since it was looked at, this fails.
        private static func open(_ directory: OwnedDescriptor, _ name: String, _ path: String) throws(RuntimeDirectoryError) -> OwnedDescriptor {
            let fd = openat(directory.rawValue, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else {
                let problem = errno == ELOOP || errno == ENOTDIR ? "changed while it was being checked" : "cannot be opened"
                throw RuntimeDirectoryError(path: path, problem: "\(problem): \(SystemError.text(errno))")
            }
            return OwnedDescriptor(fd)
        }

        private static func status(_ directory: OwnedDescriptor, _ path: String) throws(RuntimeDirectoryError) -> stat {
            do {
                return try directory.status("fstat")
            } catch {
                throw RuntimeDirectoryError(path: path, problem: "cannot be inspected: \(SystemError.text(error.errno))")
            }
        }

        /// A parent must be root's and writable by root alone, unless sticky (see RuntimeDirectory).
        private static func check(_ directory: OwnedDescriptor, _ path: String) throws(RuntimeDirectoryError) {
            let info = try status(directory, path)
            let mode = info.st_mode & 0o7777
            let octal = "0" + String(mode, radix: 8)
            guard info.st_uid == 0 else {
                throw RuntimeDirectoryError(path: path, problem: "is owned by uid \(info.st_uid) (mode \(octal)), not root: that user could replace what is below it")
            }
            let writableByOthers = mode & (S_IWGRP | S_IWOTH) != 0
            if writableByOthers && mode & S_ISVTX == 0 {
                throw RuntimeDirectoryError(path: path, problem: "is writable by group or others (mode \(octal)) and not sticky: they could replace what is below it")
            }
        }

        private static func target(of directory: OwnedDescriptor, _ name: String, _ path: String) throws(RuntimeDirectoryError) -> String {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
            let count = readlinkat(directory.rawValue, name, &buffer, buffer.count)
            guard count > 0, count < buffer.count else {
                throw RuntimeDirectoryError(path: path, problem: "is a symlink that cannot be read: \(SystemError.text(count < 0 ? errno : ENAMETOOLONG))")
            }
            return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}
