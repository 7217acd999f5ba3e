import Glibc
import StateMachine
import Synchronization
import SystemSupport

public enum ManagementChannelEvent: Sendable, Hashable {
    /// OpenVPN connected; messages follow.
    case connected
    case message(ManagementMessage)
    /// The connection closed (OpenVPN exited, or `close()`); another may follow.
    case disconnected
    /// A process other than the expected peer connected; it was closed at once, before a single
    /// byte was read or written. The channel goes on accepting. For the log. `peer` is nil when
    /// the kernel could not say who it was (which is refused too).
    case refusedPeer(PeerCredentials?, reason: String)
}

/// The management channel's errors, by their earlier name.
public typealias ManagementChannelError = ChannelError

/// Which process may hold the management connection; it must be root's as well. OpenVPN is
/// handed the credentials over this connection, so nothing else may ever be served on it.
public enum ManagementPeer: Sendable, Hashable {
    /// Only this process: the OpenVPN vpnsup has just started.
    case process(Int32)
    /// Any child process of vpnsup (OpenVPN is its only child). The default, for callers that do
    /// not name the pid; `.process` is tighter.
    case anyChild
    /// Nobody (no OpenVPN runs): every connection is refused.
    case nobody
}

/// The management socket vpnsup listens on and OpenVPN connects to (`--management <path> unix
/// --management-client`): OpenVPN finds the socket ready when it starts, and exits when this
/// connection goes away.
///
/// A dedicated thread blocks in accept(2) and read(2), serving one connection at a time, and
/// delivers what it reads on `events`. Each accepted connection is checked first (SO_PEERCRED):
/// a peer that is not root, or not the expected process, is closed unanswered and the thread
/// accepts the next one, so a client that queued up before OpenVPN's respawn cannot hold the
/// slot. (The socket's mode, 0600 in a 0700 directory, keeps every other user out with EACCES.)
/// `close()` wakes the thread with shutdown(2) rather than closing descriptors under it (another
/// thread could be handed the same number).
public final class ManagementChannel: Sendable {
    /// Unbounded: dropping a `>PASSWORD:` or `>STATE:` would be worse than the memory OpenVPN's
    /// few lines take while the consumer is busy.
    public let events: AsyncStream<ManagementChannelEvent>
    private let shared: Shared
    private let path: String
    /// The socket file we created, so `close()` removes ours and not a successor's.
    private let identity: FileIdentity

    /// Creates the listening socket at `path`, mode 0600 (a stale socket there is replaced), and
    /// starts the thread that accepts OpenVPN. The directory should be root's and mode 0700.
    /// `initialCommands` (e.g. `state on all`) are written by that thread as soon as an expected
    /// peer's connection is accepted, before `.connected` is delivered.
    /// With a `receiver`, the events go to it on the channel's thread, and `events` is empty.
    public static func listen(at path: String, initialCommands: [String] = [],
                              expecting peer: ManagementPeer = .anyChild,
                              receiver: EventSink<ManagementChannelEvent>? = nil) throws(ChannelError) -> ManagementChannel {
        guard initialCommands.allSatisfy(isSafeCommand) else { throw .invalidCommand }
        // One pending connection: OpenVPN is the only client, and one at a time.
        let (listener, identity) = try UnixSocket.listen(at: path, mode: 0o600, backlog: 1)
        let (stream, sink) = receiver.map { (EventSink<ManagementChannelEvent>.none, $0) } ?? EventSink.stream()
        let shared = Shared(listener: listener, expected: peer, sink: sink)
        do {
            try ReaderThread.start(name: "vpnsup-mgmt") { [shared] in shared.serve(initialCommands) }
        } catch {
            unlink(path)
            sink.finish()
            throw .system(error)
        }
        // Only now: the channel's deinit stops the thread, so it must not exist without one.
        return ManagementChannel(events: stream, shared: shared, path: path, identity: identity)
    }

    private init(events: AsyncStream<ManagementChannelEvent>, shared: Shared, path: String, identity: FileIdentity) {
        self.events = events
        self.shared = shared
        self.path = path
        self.identity = identity
    }

    /// Names the process the next connection must come from: call it with the pid right after
    /// starting OpenVPN (before it can connect), and with `.nobody` once it has exited. A current
    /// connection from another process is dropped.
    public func expect(_ peer: ManagementPeer) {
        shared.expect(peer)
    }

    /// Writes `command` and a line feed to the current connection. Blocks only while the kernel's
    /// socket buffer is full (bounded by a send timeout); OpenVPN reads commands promptly.
    public func send(_ command: String) throws(ChannelError) {
        guard Self.isSafeCommand(command) else { throw .invalidCommand }
        try shared.send(Array((command + "\n").utf8))
    }

    /// Whether OpenVPN is connected right now.
    public var isConnected: Bool { shared.isConnected }

    /// Stops accepting, drops the connection (OpenVPN then exits), removes the socket file and
    /// finishes `events`. Idempotent.
    public func close() {
        guard shared.stop() else { return }
        UnixSocket.remove(path, ifStill: identity)
    }

    deinit { close() }

    static func isSafeCommand(_ command: String) -> Bool {
        !command.utf8.contains { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") || $0 == 0 }
    }
}

/// What the reader thread and the callers of `send`/`close`/`expect` share. The reader thread
/// alone closes connections; others only shut them down, under the lock, so a number is never
/// reused under them.
private final class Shared: Sendable {
    private struct State {
        var connection: Int32?
        /// Whose the current connection is.
        var connectedPeer: PeerCredentials?
        var expected: ManagementPeer
        var stopped = false
    }

    private let listener: OwnedDescriptor
    private let sink: EventSink<ManagementChannelEvent>
    private let state: Mutex<State>

    init(listener: OwnedDescriptor, expected: ManagementPeer, sink: EventSink<ManagementChannelEvent>) {
        self.listener = listener
        self.sink = sink
        state = Mutex(State(expected: expected))
    }

    var isConnected: Bool { state.withLock { $0.connection != nil } }

    func expect(_ peer: ManagementPeer) {
        state.withLock { state in
            state.expected = peer
            if let connection = state.connection, let connected = state.connectedPeer,
               Self.refusal(of: connected, expecting: peer) != nil {
                // Wakes the reader (end of file); it closes the connection.
                shutdown(connection, Int32(SHUT_RDWR))
            }
        }
    }

    /// Returns false if already stopped.
    func stop() -> Bool {
        state.withLock { state in
            guard !state.stopped else { return false }
            state.stopped = true
            // Wakes accept(2) (EINVAL) and read(2) (end of file) on the reader thread.
            shutdown(listener.rawValue, Int32(SHUT_RDWR))
            if let connection = state.connection { shutdown(connection, Int32(SHUT_RDWR)) }
            return true
        }
    }

    func send(_ bytes: [UInt8]) throws(ChannelError) {
        // Holding the lock keeps the descriptor open (the reader closes it under the same lock)
        // and keeps concurrent commands from interleaving.
        let failure: ChannelError? = state.withLock { state in
            guard let fd = state.connection else { return .notConnected }
            do throws(SystemError) {
                try UnixSocket.writeAll(bytes, to: fd)
                return nil
            } catch {
                return .system(error)
            }
        }
        if let failure { throw failure }
    }

    /// Runs on the reader thread until `stop()`.
    func serve(_ initialCommands: [String]) {
        defer { sink.finish() }
        while true {
            let fd: Int32
            do {
                fd = try UnixSocket.accept(on: listener.rawValue)
            } catch {
                if state.withLock({ $0.stopped }) { return }
                // EMFILE and the like: nothing to do but report and stop; OpenVPN then fails to
                // connect and exits, which the supervisor sees.
                _ = sink.deliver(.message(.malformed("\(error)")))
                return
            }
            guard let peer = admit(fd) else {
                Glibc.close(fd)
                if state.withLock({ $0.stopped }) { return }
                continue
            }
            // A stuck peer must not hold `send` (and so the caller's actor) for long.
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let accepted = state.withLock { state in
                guard !state.stopped else { return false }
                state.connection = fd
                state.connectedPeer = peer
                return true
            }
            guard accepted else {
                Glibc.close(fd)
                return
            }
            for command in initialCommands {
                try? UnixSocket.writeAll(Array((command + "\n").utf8), to: fd)
            }
            _ = sink.deliver(.connected)
            read(fd)
            state.withLock { state in
                state.connection = nil
                state.connectedPeer = nil
                Glibc.close(fd)
            }
            _ = sink.deliver(.disconnected)
            if state.withLock({ $0.stopped }) { return }
        }
    }

    /// The peer of a freshly accepted connection if it may be served; otherwise reports it and
    /// returns nil (the caller closes the connection without reading or writing).
    private func admit(_ fd: Int32) -> PeerCredentials? {
        let peer: PeerCredentials
        do {
            peer = try UnixSocket.peer(of: fd)
        } catch {
            _ = sink.deliver(.refusedPeer(nil, reason: "\(error)"))
            return nil
        }
        let expected = state.withLock { $0.expected }
        if let reason = Self.refusal(of: peer, expecting: expected) {
            _ = sink.deliver(.refusedPeer(peer, reason: reason))
            return nil
        }
        return peer
    }

    /// Why `peer` may not hold the connection, or nil if it may.
    static func refusal(of peer: PeerCredentials, expecting expected: ManagementPeer) -> String? {
        guard peer.uid == 0 else { return "not root (uid \(peer.uid))" }
        switch expected {
        case .process(let pid):
            return peer.pid == pid ? nil : "not the OpenVPN vpnsup started (pid \(pid))"
        case .anyChild:
            return ProcessTable.parent(of: peer.pid) == getpid() ? nil : "not a child process of vpnsup"
        case .nobody:
            return "no OpenVPN is expected (none is running)"
        }
    }

    /// Reads and delivers messages until end of file or an error.
    private func read(_ fd: Int32) {
        var parser = ManagementParser()
        var buffer = [UInt8](receiving: 16384)
        while let count = try? retryingInterrupts("read", { buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } }),
              count > 0 {
            for message in parser.feed(buffer[0..<count]) { _ = sink.deliver(.message(message)) }
        }
        for message in parser.finish() { _ = sink.deliver(.message(message)) }
    }
}

/// What /proc says about processes.
enum ProcessTable {
    /// The parent of process `pid`, from /proc/<pid>/stat; nil when it is gone.
    static func parent(of pid: Int32) -> Int32? {
        guard pid > 0 else { return nil }
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let file = OwnedDescriptor(fd)
        var buffer = [UInt8](repeating: 0, count: 1024)
        guard let count = try? retryingInterrupts("read", { buffer.withUnsafeMutableBytes { Glibc.read(file.rawValue, $0.baseAddress, $0.count) } }),
              count > 0 else { return nil }
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so start after the last ')'.
        let text = buffer[..<count]
        guard let close = text.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = text[(close + 1)...].split(separator: UInt8(ascii: " "))
        guard fields.count >= 2 else { return nil }
        return Int32(String(decoding: fields[1], as: UTF8.self))
    }
}
