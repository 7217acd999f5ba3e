import Glibc
import StateMachine
import SystemSupport

public struct SpawnError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable {
        /// No executable file of that name in the search path.
        case notFound
        /// An argument, variable name or value C cannot carry (NUL, or `=` in a name).
        case invalidArgument(String)
        /// posix_spawn, one of its set-up calls, or a pipe or wait around it failed.
        case system(SystemError)
    }

    public var executable: String
    public var reason: Reason

    public var description: String {
        switch reason {
        case .notFound: "\(executable): not found"
        case .invalidArgument(let what): "\(executable): invalid argument: \(what)"
        case .system(let error): "\(executable): \(error)"
        }
    }
}

/// Starts and signals child processes without a shell. Children are reaped by the signal watcher
/// (the process's only waiter), which reports their exit by pid.
/// A finished run of a short-lived tool.
public struct CapturedRun: Sendable, Hashable {
    public var status: ExitStatus
    public var output: String
    public var errorOutput: String

    public init(status: ExitStatus, output: String, errorOutput: String) {
        self.status = status
        self.output = output
        self.errorOutput = errorOutput
    }
}

public enum Spawner {
    /// Searched when neither the child's environment nor vpnsup's has a PATH.
    public static let defaultSearchPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// Starts `executable` with `arguments` (argv[0] is `executable` as given) and exactly
    /// `environment`; returns its pid once it has been exec'd.
    ///
    /// - A name without a slash is looked up in the child's `PATH` (as `env` does), else vpnsup's,
    ///   else `defaultSearchPath`.
    /// - The child starts with an empty signal mask and default dispositions: vpnsup blocks its
    ///   handled signals and a blocked mask survives exec, so OpenVPN would otherwise never see
    ///   SIGTERM/SIGHUP.
    /// - stdin is /dev/null; stdout and stderr are vpnsup's (the container log), or a pipe
    ///   (`spawnReadingOutput`); no other descriptor is inherited, even one opened without
    ///   close-on-exec.
    /// - The child stays in vpnsup's process group and session: a container runtime signals PID 1
    ///   only, so vpnsup alone decides when OpenVPN is stopped. (A terminal's Ctrl-C reaches the
    ///   whole foreground group, OpenVPN included; it exits and vpnsup sees that.)
    public static func spawn(executable: String, arguments: [String], environment: [String: String]) throws -> Int32 {
        try spawn(executable: executable, arguments: arguments, environment: environment, output: nil)
    }

    /// As `spawn`, with the child's stdout and stderr going into one pipe whose read end is
    /// returned (so that its lines can be read, logged and judged) instead of vpnsup's own.
    public static func spawnReadingOutput(executable: String, arguments: [String],
                                          environment: [String: String]) throws -> (pid: Int32, output: ChildOutput) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw SpawnError(executable: executable, reason: .system(SystemError("pipe"))) }
        // Close-on-exec for vpnsup's later children; the child gets the write end as 1 and 2.
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let pid: Int32
        do {
            pid = try spawn(executable: executable, arguments: arguments, environment: environment, output: (fds[1], fds[1]))
        } catch {
            close(fds[0]); close(fds[1])
            throw error
        }
        close(fds[1])
        return (pid, ChildOutput(descriptor: fds[0]))
    }

    /// Runs `executable` to its end and returns its exit status with what it wrote to stdout and
    /// stderr (for short-lived tools: `docker network inspect`, `iptables`). Blocks.
    public static func capture(executable: String, arguments: [String],
                               environment: [String: String]) throws -> CapturedRun {
        func failure(_ error: SystemError) -> SpawnError { SpawnError(executable: executable, reason: .system(error)) }
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        // pipe2 is not in Swift's Glibc module; no descriptor but 0-2 reaches a child anyway.
        guard pipe(&outPipe) == 0 else { throw failure(SystemError("pipe")) }
        guard pipe(&errPipe) == 0 else {
            let error = SystemError("pipe")
            close(outPipe[0]); close(outPipe[1])
            throw failure(error)
        }
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let pid: Int32
        do {
            pid = try spawn(executable: executable, arguments: arguments, environment: environment,
                            output: (outPipe[1], errPipe[1]))
        } catch {
            for fd in outPipe + errPipe { close(fd) }
            throw error
        }
        close(outPipe[1])
        close(errPipe[1])
        // Both pipes at once, so that a child filling one while we wait on the other cannot stall.
        var collected: [[UInt8]] = [[], []]
        var descriptors = [pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0),
                           pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0)]
        var buffer = [UInt8](receiving: 65536)
        while descriptors.contains(where: { $0.fd >= 0 }),
              (try? retryingInterrupts("poll", { poll(&descriptors, 2, -1) })) != nil {
            for index in 0..<2 where descriptors[index].fd >= 0 && descriptors[index].revents != 0 {
                let fd = descriptors[index].fd
                let count = try? retryingInterrupts("read") { buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) } }
                if let count, count > 0 {
                    collected[index] += buffer[0..<count]
                } else {
                    close(fd)
                    descriptors[index].fd = -1
                }
            }
        }
        for descriptor in descriptors where descriptor.fd >= 0 { close(descriptor.fd) }
        var status: Int32 = 0
        do { try retryingInterrupts("waitpid") { waitpid(pid, &status, 0) } } catch { throw failure(error) }
        // Without WUNTRACED, waitpid reports only an end.
        return CapturedRun(status: ExitStatus(waitStatus: status) ?? .exited(-1),
                           output: String(decoding: collected[0], as: UTF8.self),
                           errorOutput: String(decoding: collected[1], as: UTF8.self))
    }

    static func spawn(executable: String, arguments: [String], environment: [String: String],
                              output: (stdout: Int32, stderr: Int32)?) throws -> Int32 {
        func failure(_ reason: SpawnError.Reason) -> SpawnError { SpawnError(executable: executable, reason: reason) }

        guard !executable.isEmpty, !executable.utf8.contains(0) else { throw failure(.invalidArgument("executable name")) }
        if let bad = arguments.first(where: { $0.utf8.contains(0) }) { throw failure(.invalidArgument("NUL in argument \(bad.debugDescription)")) }
        for (name, value) in environment {
            guard !name.isEmpty, !name.utf8.contains(0), !name.utf8.contains(UInt8(ascii: "=")), !value.utf8.contains(0) else {
                throw failure(.invalidArgument("environment variable \(name.debugDescription)"))
            }
        }
        let searchPath = environment["PATH"] ?? getenv("PATH").map { String(cString: $0) } ?? defaultSearchPath
        guard let path = resolve(executable, searchPath: searchPath) else { throw failure(.notFound) }

        var fileActions = posix_spawn_file_actions_t()
        var code = posix_spawn_file_actions_init(&fileActions)
        guard code == 0 else { throw failure(.system(SystemError(operation: "posix_spawn_file_actions_init", errno: code))) }
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        code = posix_spawn_file_actions_addopen(&fileActions, 0, "/dev/null", O_RDONLY, 0)
        guard code == 0 else { throw failure(.system(SystemError(operation: "posix_spawn_file_actions_addopen", errno: code))) }
        if let output {
            code = posix_spawn_file_actions_adddup2(&fileActions, output.stdout, 1)
            if code == 0 { code = posix_spawn_file_actions_adddup2(&fileActions, output.stderr, 2) }
            guard code == 0 else { throw failure(.system(SystemError(operation: "posix_spawn_file_actions_adddup2", errno: code))) }
        }
        // A descriptor without close-on-exec (a library's, or one accept(2) returned a moment ago):
        // OpenVPN gets none.
        if let addCloseFrom {
            code = addCloseFrom(&fileActions, 3)
            guard code == 0 else { throw failure(.system(SystemError(operation: "posix_spawn_file_actions_addclosefrom_np", errno: code))) }
        }

        var attributes = posix_spawnattr_t()
        code = posix_spawnattr_init(&attributes)
        guard code == 0 else { throw failure(.system(SystemError(operation: "posix_spawnattr_init", errno: code))) }
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        code = posix_spawnattr_setsigmask(&attributes, &emptyMask)
        if code == 0 { code = posix_spawnattr_setsigdefault(&attributes, &allSignals) }
        if code == 0 { code = posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) }
        guard code == 0 else { throw failure(.system(SystemError(operation: "posix_spawnattr", errno: code))) }

        let argv = CStringArray([executable] + arguments)
        let envp = CStringArray(environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })
        var pid: pid_t = 0
        code = posix_spawn(&pid, path, &fileActions, &attributes, argv.pointers, envp.pointers)
        guard code == 0 else { throw failure(.system(SystemError(operation: "posix_spawn \(path)", errno: code))) }
        return pid
    }

    /// The path `executable` runs from: itself if it holds a slash, else the first executable
    /// regular file of that name in `searchPath` (an empty entry means the current directory).
    public static func resolve(_ executable: String, searchPath: String) -> String? {
        if executable.contains("/") { return executable }
        for directory in searchPath.split(separator: ":", omittingEmptySubsequences: false) {
            let candidate = directory.isEmpty ? executable : "\(directory)/\(executable)"
            var info = stat()
            if stat(candidate, &info) == 0, info.st_mode & S_IFMT == S_IFREG, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        return nil
    }

    /// Sends `signal` to the process `pid`. Refuses pids that are not a single other process
    /// (0 and negatives address process groups, -1 everything: fatal mistakes for a PID 1).
    /// Returns whether the signal was sent; false also when the process is already gone.
    @discardableResult
    public static func signal(_ pid: Int32, _ signal: Int32) -> Bool {
        guard pid > 0, pid != getpid() else { return false }
        return Glibc.kill(pid, signal) == 0
    }

    /// SIGTERM: asks OpenVPN to exit cleanly (it sends an exit notification to the server).
    @discardableResult
    public static func terminate(pid: Int32) -> Bool { signal(pid, SIGTERM) }

    /// SIGKILL: when `terminate` was not heeded in time.
    @discardableResult
    public static func kill(pid: Int32) -> Bool { signal(pid, SIGKILL) }
}

private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

/// glibc 2.34+ has posix_spawn_file_actions_addclosefrom_np but declares it only under
/// _GNU_SOURCE, which Swift's Glibc module is built without; look it up at run time instead.
private let addCloseFrom: AddCloseFrom? = {
    // A null handle is RTLD_DEFAULT: search the libraries already loaded.
    guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
    return unsafeBitCast(symbol, to: AddCloseFrom.self)
}()

/// A NULL-terminated array of C strings (argv/envp), freed in deinit.
private final class CStringArray {
    let pointers: [UnsafeMutablePointer<CChar>?]

    init(_ strings: [String]) {
        pointers = strings.map { strdup($0) } + [nil]
    }

    deinit { for pointer in pointers { free(pointer) } }
}
