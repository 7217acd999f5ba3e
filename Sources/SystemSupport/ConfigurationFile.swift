import Glibc
import StateMachine
import Synchronization

/// What a configuration file held: its text, and its permission bits (for the credentials
/// warning), from the same open file.
public struct ConfigurationFileContents: Sendable, Hashable {
    public var text: String
    public var mode: UInt32
}

/// Why a configuration file was not read. `description` is the reason alone; `line(variable:)`
/// is the one stderr line naming the variable and the path.
public struct ConfigurationFileError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable {
        /// open, fstat or read failed.
        case system(SystemError)
        /// A FIFO, a device, a directory or a socket: `kind` says which.
        case notARegularFile(kind: String)
        case tooLarge(size: Int, limit: Int)
        case notUTF8
        /// The read did not finish in time (a hung network file system); it goes on on its own
        /// thread and its result is dropped.
        case timedOut(Duration)
        /// An earlier read of this path has not returned yet: no second thread is spent on it.
        case earlierReadPending
    }

    public var path: String
    public var reason: Reason

    public var description: String {
        switch reason {
        case .system(let error): error.description
        case .notARegularFile(let kind): "not a regular file but \(kind)"
        case .tooLarge(let size, let limit): "over \(ConfigurationFile.text(bytes: limit)) (\(size) bytes)"
        case .notUTF8: "decode as UTF-8: \(SystemError.text(EILSEQ))"
        case .timedOut(let after): "no answer within \(after) (a hung file system?)"
        case .earlierReadPending: "an earlier read of it has not returned yet (a hung file system?)"
        }
    }

    /// `CREDENTIALS_FILE=/run/secrets/x cannot be read: not a regular file but a FIFO`.
    public func line(variable: String) -> String {
        "\(variable)=\(escapedForDisplay(path)) cannot be read: \(description)"
    }
}

/// The one loader of the files vpnsup is given: the OpenVPN configuration, the credentials,
/// resolv.conf. A file that could block vpnsup is refused instead of read:
///
/// - opened with O_NONBLOCK (a FIFO without a writer does not block the open), O_NOCTTY (a
///   terminal does not become vpnsup's) and O_CLOEXEC; symlinks are followed, as Docker secrets
///   and Kubernetes ConfigMaps are symlinks;
/// - then fstat(2) on the open file: only a regular file is read; a FIFO, a device, a directory
///   or a socket is refused, naming what it is;
/// - at most `sizeLimit` bytes, checked before reading and while reading (the file may grow).
///
/// `read(_:timeout:)` reads on a thread of its own and gives up at the deadline, so that the
/// supervisor's kill switch and drift repair never wait on a file system that hangs.
public enum ConfigurationFile {
    /// 1 MiB: an OpenVPN configuration with inline certificates and keys is 10-20 KiB, one with
    /// a large CA bundle a few hundred; credentials are two lines, resolv.conf a few. The bound
    /// keeps a wrong path (a log, a disk image) from costing memory and time, with a wide margin
    /// for any real file.
    public static let sizeLimit = 1 << 20

    /// The directory an absolute path's file is in (`/` for a file at the root): where OpenVPN
    /// resolves CONFIG's relative paths, where PORT_FWD_FILE's watcher watches.
    public static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    /// How long `read(_:timeout:)` waits by default: a local file takes microseconds.
    public static let defaultTimeout: Duration = .seconds(1)

    /// Reads `path` on the calling thread. Never blocks on a FIFO or a device; a regular file on
    /// a hung network file system can still block it: off the actor, use `read(_:timeout:)`.
    public static func read(_ path: String, limit: Int = sizeLimit) -> Result<ConfigurationFileContents, ConfigurationFileError> {
        func failure(_ reason: ConfigurationFileError.Reason) -> Result<ConfigurationFileContents, ConfigurationFileError> {
            .failure(ConfigurationFileError(path: path, reason: reason))
        }
        let file: OwnedDescriptor
        let info: stat
        do {
            file = OwnedDescriptor(try retryingInterrupts("open") { open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC) })
            info = try file.status("fstat")
        } catch {
            return failure(.system(error))
        }
        if let kind = nonRegularKind(info.st_mode) { return failure(.notARegularFile(kind: kind)) }
        if info.st_size > limit { return failure(.tooLarge(size: Int(info.st_size), limit: limit)) }

        var bytes: [UInt8] = []
        var chunk = [UInt8](receiving: 65536)
        while true {
            let count: Int
            do {
                count = try retryingInterrupts("read") { chunk.withUnsafeMutableBytes { Glibc.read(file.rawValue, $0.baseAddress, $0.count) } }
            } catch {
                return failure(.system(error))
            }
            if count == 0 { break }
            bytes += chunk[0..<count]
            if bytes.count > limit { return failure(.tooLarge(size: bytes.count, limit: limit)) }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else { return failure(.notUTF8) }
        return .success(ConfigurationFileContents(text: text, mode: UInt32(info.st_mode) & 0o7777))
    }

    /// Reads `path` on a thread of its own and gives up after `timeout` (or when the calling task
    /// is cancelled). A read still stuck from an earlier call makes this one fail at once rather
    /// than start another thread.
    public static func read(_ path: String, limit: Int = sizeLimit,
                            timeout: Duration = defaultTimeout) async -> Result<ConfigurationFileContents, ConfigurationFileError> {
        await offThread(path, timeout: timeout) { read(path, limit: limit) }
    }

    /// Runs `load` for `path` on its own thread, bounded by `timeout`; one at a time per path.
    static func offThread(_ path: String, timeout: Duration,
                          _ load: @escaping @Sendable () -> Result<ConfigurationFileContents, ConfigurationFileError>)
        async -> Result<ConfigurationFileContents, ConfigurationFileError> {
        let claimed = pathsBeingRead.withLock { $0.insert(path).inserted }
        guard claimed else { return .failure(ConfigurationFileError(path: path, reason: .earlierReadPending)) }
        do {
            let result = try await ReaderThread.value(name: "vpnsup-file", timeout: timeout) {
                defer { _ = pathsBeingRead.withLock { $0.remove(path) } }
                return load()
            }
            return result ?? .failure(ConfigurationFileError(path: path, reason: .timedOut(timeout)))
        } catch {
            _ = pathsBeingRead.withLock { $0.remove(path) }
            return .failure(ConfigurationFileError(path: path, reason: .system(error)))
        }
    }

    /// Paths whose read runs on a thread right now (one may hang on a dead file system).
    private static let pathsBeingRead = Mutex<Set<String>>([])

    /// What a file of this mode is, if not a regular file.
    static func nonRegularKind(_ mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG: nil
        case S_IFIFO: "a FIFO"
        case S_IFDIR: "a directory"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        default: "of file type \(String(mode & S_IFMT, radix: 8))"
        }
    }

    static func text(bytes: Int) -> String {
        bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : "\(bytes) bytes"
    }
}

/// The loader under its earlier name, for callers that want the text alone.
public enum TextFile {
    /// Reads a whole file as UTF-8 through `ConfigurationFile`; the error names the reason.
    public static func read(_ path: String, limit: Int = ConfigurationFile.sizeLimit) -> Result<String, ConfigurationFileError> {
        ConfigurationFile.read(path, limit: limit).map(\.text)
    }
}
