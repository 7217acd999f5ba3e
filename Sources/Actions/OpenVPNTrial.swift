import Glibc
import StateMachine
import SystemSupport

/// What a trial run of OpenVPN printed before it was stopped or ended.
public struct OpenVPNTrialResult: Sendable, Hashable {
    /// Its stdout and stderr, line by line (timestamps as OpenVPN prints them).
    public var lines: [String]
    /// The line `stopAt` accepted, when the trial was stopped there.
    public var stoppedAt: String?
    /// How it ended: by itself, or after the SIGTERM of a stop.
    public var status: ExitStatus
    /// The safety bound ran out before OpenVPN reached a stop line or ended (a hang).
    public var timedOut: Bool
}

/// Runs a program (OpenVPN under `unshare --net`, for `vpnsup check`) and reads what it prints
/// as it prints it, until `stopAt` accepts a line (then SIGTERM, and SIGKILL if it does not end
/// within two seconds) or it ends by itself. `timeoutSeconds` only bounds a hang; the normal end
/// is a line or an exit, as they happen. Blocks; the caller must be the only waiter for children
/// (vpnsup check starts no reaper).
public enum OpenVPNTrial {
    public static func run(executable: String, arguments: [String], environment: [String: String],
                           timeoutSeconds: Int32, stopAt: (String) -> Bool) throws -> OpenVPNTrialResult {
        func failure(_ error: SystemError) -> SpawnError { SpawnError(executable: executable, reason: .system(error)) }
        var fds: [Int32] = [-1, -1]
        do { try retryingInterrupts("pipe") { pipe(&fds) } } catch { throw failure(error) }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let output = OwnedDescriptor(fds[0])
        let pid: Int32
        do {
            let input = OwnedDescriptor(fds[1])  // closed here once the child has its copy
            pid = try Spawner.spawn(executable: executable, arguments: arguments, environment: environment,
                                    output: (input.rawValue, input.rawValue))
        }

        var lines: [String] = []
        var pending: [UInt8] = []
        var stoppedAt: String?
        var timedOut = false
        var buffer = [UInt8](receiving: 65536)
        let deadline = ContinuousClock.now + .seconds(timeoutSeconds)
        reading: while true {
            guard let readiness = try? awaitReadiness(output.rawValue, for: Int16(POLLIN), until: deadline) else { break }
            if readiness == .deadlinePassed {
                timedOut = true
                break
            }
            let count = try? retryingInterrupts("read") { buffer.withUnsafeMutableBytes { read(output.rawValue, $0.baseAddress, $0.count) } }
            guard let count, count > 0 else { break } // the end of its output: it exited (or closed it)
            pending += buffer[0..<count]
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                lines.append(line)
                if stopAt(line) {
                    stoppedAt = line
                    break reading
                }
            }
        }
        if !pending.isEmpty, stoppedAt == nil { lines.append(String(decoding: pending, as: UTF8.self)) }
        if stoppedAt != nil || timedOut {
            Spawner.terminate(pid: pid)
            // Its output closes when it exits: wait for that, at most two seconds, then SIGKILL.
            if !drainUntilClosed(output.rawValue, until: ContinuousClock.now + .seconds(2)) { Spawner.kill(pid: pid) }
        }
        var status: Int32 = 0
        do { try retryingInterrupts("waitpid") { waitpid(pid, &status, 0) } } catch { throw failure(error) }
        return OpenVPNTrialResult(lines: lines, stoppedAt: stoppedAt, status: ExitStatus(waitStatus: status) ?? .exited(-1), timedOut: timedOut)
    }

    /// Reads and discards `fd` until it is closed (true) or `deadline` passes (false).
    private static func drainUntilClosed(_ fd: Int32, until deadline: ContinuousClock.Instant) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            guard let readiness = try? awaitReadiness(fd, for: Int16(POLLIN), until: deadline) else { return false }
            guard readiness == .ready else { return false }
            let count = try? retryingInterrupts("read") { buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) } }
            if count == nil || count == 0 { return true }
        }
    }
}

/// A directory of its own for a one-shot job (`vpnsup check`'s vetted configuration), mode 0700,
/// removed with what it holds by `remove()`.
public struct ScratchDirectory: Sendable {
    public let path: String

    public init(prefix: String) throws {
        var template = Array("/tmp/\(prefix).XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard made != nil else { throw SystemError("mkdtemp") }
        path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Writes `text` to `name` in the directory, mode 0600; returns its path.
    public func write(_ name: String, _ text: String) throws -> String {
        let file = path + "/" + name
        let fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError("open \(file)") }
        defer { close(fd) }
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let written = try retryingInterrupts("write \(file)") { bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } }
            bytes = bytes.dropFirst(written)
        }
        return file
    }

    /// Removes the files written and the directory.
    public func remove(_ names: [String]) {
        for name in names { unlink(path + "/" + name) }
        rmdir(path)
    }
}
