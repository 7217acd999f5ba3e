import Glibc
import Synchronization

/// Collects everything an AsyncStream delivers, so tests can wait for what they expect.
final class EventLog<Element: Sendable>: Sendable {
    private struct Contents {
        var items: [Element] = []
        var finished = false
    }

    private let contents = Mutex(Contents())

    init(_ stream: AsyncStream<Element>) {
        Task { [self] in
            for await item in stream { contents.withLock { $0.items.append(item) } }
            contents.withLock { $0.finished = true }
        }
    }

    var items: [Element] { contents.withLock { $0.items } }
    var finished: Bool { contents.withLock { $0.finished } }

    /// Waits (checking every 10 ms) until `predicate` holds; false after `timeout`.
    func wait(timeout: Duration = .seconds(10), until predicate: ([Element], Bool) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            if contents.withLock({ predicate($0.items, $0.finished) }) { return true }
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    func wait(timeout: Duration = .seconds(10), until predicate: ([Element]) -> Bool) async -> Bool {
        await wait(timeout: timeout) { items, _ in predicate(items) }
    }
}

enum TestSystem {
    /// A new private directory under /tmp.
    static func temporaryDirectory() -> String {
        var template = Array("/tmp/vpnsup-test-XXXXXX".utf8CString)
        let result = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(result != nil, "mkdtemp failed")
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func removeTree(_ path: String) {
        // Test directories are flat.
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { unlink("\(path)/\(name)") }
            }
            closedir(directory)
        }
        rmdir(path)
    }

    static func fileMode(_ path: String) -> UInt32? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return UInt32(info.st_mode)
    }

    static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func writeFile(_ path: String, _ text: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        precondition(fd >= 0)
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// A socket file whose socket is gone, as a crashed run leaves it.
    static func makeStaleSocket(_ path: String) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        precondition(result == 0)
        close(fd)
    }

    static func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }

    /// Starts a child (no shell) with an empty signal mask, stdout and stderr to `output` if given.
    static func spawn(_ path: String, _ arguments: [String], output: String? = nil,
                      extraEnvironment: [String] = []) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let output {
            posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        var inherited: [UnsafeMutablePointer<CChar>?] = []
        var cursor = environ
        while let entry = cursor.pointee {
            inherited.append(entry)
            cursor += 1
        }
        let added = extraEnvironment.map { strdup($0) }
        defer { added.forEach { free($0) } }
        let code = posix_spawn(&pid, path, &actions, &attributes, argv, inherited + added + [nil])
        precondition(code == 0, "posix_spawn \(path): \(code)")
        return pid
    }

    /// Whether `pid` has ended (a zombie, or already reaped). Does not reap: in this test process
    /// the signal watcher may be the reaper.
    static func hasExited(_ pid: pid_t) -> Bool {
        guard let stat = readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(after: close)...].dropFirst().first == "Z"
    }

    static func waitUntilExited(_ pid: pid_t, timeout: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !hasExited(pid) {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    /// Reaps `pid` if nobody else has (ECHILD means the signal watcher did).
    static func reap(_ pid: pid_t) {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// Runs a short command to completion and returns its output.
    static func run(_ path: String, _ arguments: [String], in directory: String) async -> String? {
        let output = "\(directory)/run-\(UInt32.random(in: 0 ... .max)).out"
        let pid = spawn(path, arguments, output: output)
        guard await waitUntilExited(pid) else { return nil }
        reap(pid)
        return readFile(output)
    }
}

/// The client end of a unix stream socket, as OpenVPN would hold it.
final class TestClient {
    let fd: Int32

    init?(path: String) {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8) + [0])
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            Glibc.close(fd)
            return nil
        }
        // Reads below never wait long: what they expect has been sent already, or soon is.
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func write(_ text: String) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// One line without its line feed; nil on end of file, error or timeout.
    func readLine() -> String? {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let count = recv(fd, &byte, 1, 0)
            if count < 0 && errno == EINTR { continue }
            guard count == 1 else { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
    }

    /// True when the peer closed the connection.
    func readsEndOfFile() -> Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, 0) == 0
    }

    func close() { shutdown(fd, Int32(SHUT_RDWR)) }

    deinit { Glibc.close(fd) }
}

/// A unix-socket client in a process of its own (python3), root or another user, as a rogue
/// client or a peer other than the test process would be. It connects, reads until end of file
/// (10 s at most) and prints `eof|timeout|error N <count> <hex bytes>`, or `connect-error N`.
struct PeerProcess {
    static let python = "/usr/bin/python3"
    static var available: Bool { TestSystem.isExecutable(python) }

    private static let clientScript = """
        import socket, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sys.argv[1])
        except OSError as e:
            print("connect-error %d" % e.errno); sys.exit(0)
        print("connected", flush=True)
        s.settimeout(10)
        data, end = b"", "eof"
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk: break
                data += chunk
        except socket.timeout: end = "timeout"
        except OSError as e: end = "error %d" % e.errno
        print("%s %d %s" % (end, len(data), data.hex()))
        """

    /// A server that accepts connections and sends each `answer`, until killed.
    private static let serverScript = """
        import socket, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(sys.argv[1]); s.listen(4)
        print("listening", flush=True)
        while True:
            c, _ = s.accept()
            try: c.sendall(sys.argv[2].encode())
            except OSError: pass  # a client that checked who serves and left
            c.close()
        """

    let pid: pid_t
    let output: String

    /// `user`: run as that uid (and gid) through setpriv, or as root.
    static func client(connectingTo path: String, output: String, user: UInt32? = nil) -> PeerProcess {
        start(["-c", clientScript, path], output: output, user: user)
    }

    static func server(at path: String, answering answer: String, output: String, user: UInt32? = nil) -> PeerProcess {
        start(["-c", serverScript, path, answer], output: output, user: user)
    }

    private static func start(_ arguments: [String], output: String, user: UInt32?) -> PeerProcess {
        if let user {
            let pid = TestSystem.spawn("/usr/bin/setpriv", ["--reuid", "\(user)", "--regid", "\(user)", "--clear-groups", python] + arguments,
                                       output: output)
            return PeerProcess(pid: pid, output: output)
        }
        return PeerProcess(pid: TestSystem.spawn(python, arguments, output: output), output: output)
    }

    /// What it printed so far.
    var printed: String { TestSystem.readFile(output) ?? "" }

    /// Waits until it has printed a line starting with `prefix`.
    func waitFor(_ prefix: String, timeout: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !printed.split(separator: "\n").contains(where: { $0.hasPrefix(prefix) }) {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    /// Kills it (if still running) and reaps it; true once it is gone.
    func stop() async -> Bool {
        kill(pid, SIGKILL)
        let gone = await TestSystem.waitUntilExited(pid)
        TestSystem.reap(pid)
        return gone
    }
}
