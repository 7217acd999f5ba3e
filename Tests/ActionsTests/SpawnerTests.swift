import Glibc
import Testing
@testable import Actions
import SystemSupport

/// Children are inspected through /proc while they run. Exit statuses are the signal watcher's
/// business (WatchersTests): in this shared test process it may reap these children first, so
/// waits here tolerate ECHILD and checks rely on what the child left behind.
@Suite struct SpawnerTests {
    @Test func childStartsWithNoBlockedOrIgnoredSignals() async throws {
        // Block and ignore signals in the spawning thread, as vpnsup does, then spawn without an
        // await in between so the same thread does both.
        var blocked = sigset_t()
        sigemptyset(&blocked)
        for signal in [SIGHUP, SIGTERM, SIGINT, SIGCHLD, SIGUSR1] { sigaddset(&blocked, signal) }
        var previousMask = sigset_t()
        pthread_sigmask(SIG_BLOCK, &blocked, &previousMask)
        let previousUSR2 = Glibc.signal(SIGUSR2, SIG_IGN)
        let spawned = Result { try Spawner.spawn(executable: "sleep", arguments: ["30"], environment: ["PATH": "/usr/bin:/bin"]) }
        Glibc.signal(SIGUSR2, previousUSR2)
        pthread_sigmask(SIG_SETMASK, &previousMask, nil)

        let pid = try spawned.get()
        defer { stop(pid) }
        let status = try #require(ProcFS.read("/proc/\(pid)/status"))
        #expect(ProcFS.field("SigBlk", in: status) == "0000000000000000")
        // glibc's posix_spawn leaves its two internal signals (32, 33) ignored; the program's own
        // glibc takes them over at start-up. Every standard signal is at its default.
        let ignored = try #require(ProcFS.field("SigIgn", in: status).flatMap { UInt64($0, radix: 16) })
        #expect(ignored & ~(UInt64(0b11) << 31) == 0)
        // Same process group and session as ours.
        #expect(getpgid(pid) == getpgid(0))
        #expect(getsid(pid) == getsid(0))
    }

    @Test func argumentsArriveVerbatimWithoutAShell() async throws {
        let directory = ProcFS.temporaryDirectory()
        defer { ProcFS.removeTree(directory) }
        // sh is the program here, not an interpreter of our arguments: the positional parameters
        // after the script must arrive as given (no globbing, expansion, splitting or quoting).
        let arguments = ["a b", "$HOME", "\"q\"", "*", "", "; reboot", "'"]
        let pid = try Spawner.spawn(executable: "/bin/sh",
                                    arguments: ["-c", "for a; do printf '[%s]' \"$a\"; done > \"$OUT\"", "sh"] + arguments,
                                    environment: ["OUT": "\(directory)/out"])
        #expect(await ProcFS.waitUntilExited(pid))
        ProcFS.reap(pid)
        #expect(ProcFS.read("\(directory)/out") == arguments.map { "[\($0)]" }.joined())
    }

    @Test func environmentAndDescriptorsAreExact() async throws {
        let directory = ProcFS.temporaryDirectory()
        defer { ProcFS.removeTree(directory) }
        let marker = "\(directory)/inherited"
        ProcFS.write(marker, "", mode: 0o600)
        let unclosed = open(marker, O_RDONLY)   // deliberately without O_CLOEXEC
        defer { close(unclosed) }
        let pid = try Spawner.spawn(executable: "/bin/sleep", arguments: ["30"],
                                    environment: ["PATH": "/usr/bin", "WITH_SPACE": "x y", "EMPTY": ""])
        defer { stop(pid) }
        // posix_spawn returns once the kernel has released the parent (vfork), which is before the
        // new program's arguments are in place: under load /proc can still show the old ones.
        #expect(await ProcFS.waitUntil { ProcFS.read("/proc/\(pid)/cmdline")?.hasPrefix("/bin/sleep") == true })
        #expect(ProcFS.read("/proc/\(pid)/cmdline") == "/bin/sleep\u{0}30\u{0}")
        #expect(ProcFS.read("/proc/\(pid)/environ") == "EMPTY=\u{0}PATH=/usr/bin\u{0}WITH_SPACE=x y\u{0}")
        #expect(ProcFS.link("/proc/\(pid)/fd/0") == "/dev/null")
        // Not even a descriptor opened without close-on-exec is inherited. (Only its absence is
        // checked: sleep may hold a file of its own open for a moment while it starts.)
        let links = ProcFS.directory("/proc/\(pid)/fd").compactMap { ProcFS.link("/proc/\(pid)/fd/\($0)") }
        #expect(ProcFS.link("/proc/self/fd/\(unclosed)") == marker)
        #expect(!links.contains(marker))
        #expect(ProcFS.link("/proc/\(pid)/fd/1") == ProcFS.link("/proc/self/fd/1"))
    }

    @Test func resolvesNamesWithoutASlashThroughPATH() throws {
        let directory = ProcFS.temporaryDirectory()
        defer { ProcFS.removeTree(directory) }
        // Not executable, and a directory of that name: both skipped.
        ProcFS.write("\(directory)/plain/tool", "#!/bin/sh\n", mode: 0o644)
        mkdir("\(directory)/dir", 0o755)
        mkdir("\(directory)/dir/tool", 0o755)
        ProcFS.write("\(directory)/bin/tool", "#!/bin/sh\nexit 0\n", mode: 0o755)

        let path = "\(directory)/plain:\(directory)/dir:\(directory)/missing:\(directory)/bin:/usr/bin"
        #expect(Spawner.resolve("tool", searchPath: path) == "\(directory)/bin/tool")
        #expect(Spawner.resolve("tool", searchPath: "\(directory)/plain") == nil)
        #expect(Spawner.resolve("./relative/x", searchPath: "") == "./relative/x")
        #expect(Spawner.resolve("sleep", searchPath: "/nonexistent:/usr/bin") == "/usr/bin/sleep")

        // The child's PATH is searched, not ours.
        #expect(throws: SpawnError(executable: "tool", reason: .notFound)) {
            try Spawner.spawn(executable: "tool", arguments: [], environment: ["PATH": "/usr/bin"])
        }
        let pid = try Spawner.spawn(executable: "tool", arguments: [], environment: ["PATH": "\(directory)/bin"])
        stop(pid)
    }

    @Test func rejectsWhatCCannotCarry() {
        #expect(throws: SpawnError.self) { try Spawner.spawn(executable: "sleep", arguments: ["a\0b"], environment: [:]) }
        #expect(throws: SpawnError.self) { try Spawner.spawn(executable: "sleep", arguments: [], environment: ["A=B": "c"]) }
        #expect(throws: SpawnError.self) { try Spawner.spawn(executable: "sleep", arguments: [], environment: ["": "c"]) }
        #expect(throws: SpawnError.self) { try Spawner.spawn(executable: "sleep", arguments: [], environment: ["A": "\0"]) }
        #expect(throws: SpawnError.self) { try Spawner.spawn(executable: "", arguments: [], environment: [:]) }
        #expect(throws: SpawnError(executable: "/nonexistent/openvpn",
                                   reason: .system(SystemError(operation: "posix_spawn /nonexistent/openvpn", errno: ENOENT)))) {
            try Spawner.spawn(executable: "/nonexistent/openvpn", arguments: [], environment: [:])
        }
    }

    @Test func signalsOnlySingleOtherProcesses() async throws {
        #expect(!Spawner.signal(0, 0))
        #expect(!Spawner.signal(-1, 0))
        #expect(!Spawner.signal(-getpgid(0), 0))
        #expect(!Spawner.terminate(pid: getpid()))

        let pid = try Spawner.spawn(executable: "sleep", arguments: ["30"], environment: [:])
        #expect(Spawner.terminate(pid: pid))
        #expect(await ProcFS.waitUntilExited(pid))
        ProcFS.reap(pid)
        #expect(!Spawner.kill(pid: pid))   // gone
    }

    /// stdout and stderr share one pipe, read line by line to the end; a line longer than the
    /// cap is cut, a last line without LF still counts.
    @Test func outputIsReadThroughAPipeLineByLine() throws {
        let (pid, output) = try Spawner.spawnReadingOutput(
            executable: "sh", arguments: ["-c", "echo one; echo two >&2; printf '%05000d\\n' 0; printf 'no newline'"],
            environment: ["PATH": "/usr/bin:/bin"])
        var lines: [String] = []
        output.readLines { lines.append($0) }
        ProcFS.reap(pid)
        #expect(lines.count == 4, "\(lines.map { $0.prefix(20) })")
        #expect(lines.first == "one")
        #expect(lines.dropFirst().first == "two")
        #expect(lines.dropFirst(2).first == String(repeating: "0", count: ChildOutput.maximumLineLength))
        #expect(lines.last == "no newline")
        // Read to its end, the descriptor is closed: reading again yields nothing and blocks not.
        var again = 0
        output.readLines { _ in again += 1 }
        #expect(again == 0)
    }

    @Test func privateFilesAreWrittenWholeAndOnlyForRoot() throws {
        let directory = ProcFS.temporaryDirectory()
        defer { ProcFS.removeTree(directory) }
        let path = directory + "/openvpn.conf"
        // A file left readable by others, and a symlink pointing elsewhere, are replaced, not followed.
        ProcFS.write(path, "old\n", mode: 0o644)
        try PrivateFile.write("client\n", to: path)
        #expect(PrivateFile.mode(path) == 0o600)
        #expect(ProcFS.read(path) == "client\n")
        let elsewhere = directory + "/elsewhere"
        ProcFS.write(elsewhere, "untouched\n", mode: 0o644)
        unlink(path)
        symlink(elsewhere, path)
        try PrivateFile.write("vetted\n", to: path)
        #expect(ProcFS.read(elsewhere) == "untouched\n")
        #expect(ProcFS.link(path) == nil, "a regular file now")
        #expect(ProcFS.read(path) == "vetted\n" && PrivateFile.mode(path) == 0o600)
        #expect(ProcFS.directory(directory).sorted() == ["elsewhere", "openvpn.conf"], "no temporary file left")
        PrivateFile.remove(path)
        #expect(PrivateFile.mode(path) == nil)
    }

    private func stop(_ pid: Int32) {
        Spawner.kill(pid: pid)
        ProcFS.reap(pid)
    }
}

enum ProcFS {
    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func field(_ name: String, in status: String) -> String? {
        status.split(separator: "\n").first { $0.hasPrefix(name + ":") }
            .map { String($0.dropFirst(name.count + 1).drop { $0 == "\t" || $0 == " " }) }
    }

    static func link(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count >= 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func directory(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func temporaryDirectory() -> String {
        var template = Array("/tmp/vpnsup-spawn-XXXXXX".utf8CString)
        let result = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(result != nil)
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Writes a file, creating its parent directory.
    static func write(_ path: String, _ text: String, mode: mode_t) {
        let parent = String(path[..<path.lastIndex(of: "/")!])
        mkdir(parent, 0o755)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        precondition(fd >= 0)
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        chmod(path, mode)
    }

    static func removeTree(_ path: String) {
        for name in directory(path) {
            let child = "\(path)/\(name)"
            var info = stat()
            if lstat(child, &info) == 0, info.st_mode & S_IFMT == S_IFDIR { removeTree(child) } else { unlink(child) }
        }
        rmdir(path)
    }

    /// Whether `pid` has ended (zombie or reaped), without reaping it.
    static func hasExited(_ pid: Int32) -> Bool {
        guard let stat = read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(after: close)...].dropFirst().first == "Z"
    }

    static func waitUntilExited(_ pid: Int32, timeout: Duration = .seconds(10)) async -> Bool {
        await waitUntil(timeout: timeout) { hasExited(pid) }
    }

    static func waitUntil(timeout: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return true
    }

    /// Reaps `pid` unless the signal watcher (same test process) already has.
    static func reap(_ pid: Int32) {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }
}
