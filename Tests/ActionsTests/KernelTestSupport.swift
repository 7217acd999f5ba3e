import Foundation
import Glibc

// Helpers for root tests that need a kernel: running tools, and entering network namespaces
// other than the test process's own.

struct ToolError: Error, CustomStringConvertible {
    var description: String
}

/// posix_spawn with what a child of a test needs: only descriptors 0-2 (tests run in parallel,
/// and a child holding another test's pipe open would keep that test waiting for EOF forever),
/// and no signals blocked or ignored (the test process blocks some; children inherit the mask).
/// `files` adds the actions that set up descriptors 0-2.
private func spawn(_ tool: String, _ arguments: [String],
                   files: (inout posix_spawn_file_actions_t) -> Void) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    files(&actions)
    // glibc declares it only under _GNU_SOURCE, so Swift's Glibc module lacks it.
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np"),
          unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3) == 0 else {
        throw ToolError(description: "posix_spawn_file_actions_addclosefrom_np unavailable")
    }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t(), all = sigset_t()
    sigemptyset(&none)
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let argv: [UnsafeMutablePointer<CChar>?] = ([tool] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, tool, &actions, &attributes, argv, environ)
    guard spawned == 0 else { throw ToolError(description: "posix_spawn \(tool): error \(spawned)") }
    return pid
}

/// Runs a tool and returns its exit status and combined output. posix_spawn rather than
/// Foundation's Process: in a fresh namespace (loopback down) CFSocket cannot create its wakeup
/// socket pair and Process hangs. The child inherits the calling thread's network namespace.
@discardableResult
func runTool(_ tool: String, _ arguments: [String], input: String? = nil) throws -> (status: Int32, output: String) {
    var outPipe: [Int32] = [-1, -1], inPipe: [Int32] = [-1, -1]
    guard pipe(&outPipe) == 0 else { throw ToolError(description: "pipe: errno \(errno)") }
    guard pipe(&inPipe) == 0 else {
        close(outPipe[0]); close(outPipe[1])
        throw ToolError(description: "pipe: errno \(errno)")
    }
    let pid: pid_t
    do {
        pid = try spawn(tool, arguments) { actions in
            posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 2)
        }
    } catch {
        (inPipe + outPipe).forEach { close($0) }
        throw error
    }
    close(inPipe[0]); close(outPipe[1])
    if let input {
        // Small inputs only (a ruleset text): fits the pipe buffer, so no writer thread is needed.
        let bytes = Array(input.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(inPipe[1], $0.baseAddress, $0.count) }
            guard written > 0 else { break }
            offset += written
        }
    }
    close(inPipe[1])
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(outPipe[0], &buffer, buffer.count)
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { break }
        output += buffer[0..<count]
    }
    close(outPipe[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // WIFEXITED/WEXITSTATUS are macros: decode the wait status by hand.
    let exitStatus = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (exitStatus, String(decoding: output, as: UTF8.self))
}

/// Starts a long-running tool with stdout and stderr going to `logPath`; returns its pid. The
/// caller stops it with `stopDaemon`.
func startDaemon(_ tool: String, _ arguments: [String], logPath: String) throws -> pid_t {
    try spawn(tool, arguments) { actions in
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
    }
}

/// Stops a daemon started by `startDaemon` (SIGKILL: test daemons keep no state worth a clean
/// exit) and reaps it.
func stopDaemon(_ pid: pid_t) {
    kill(pid, SIGKILL)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
}

