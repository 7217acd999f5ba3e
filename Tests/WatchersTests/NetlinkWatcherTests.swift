import Foundation
import StateMachine
import Synchronization
import Testing
import TestSupport
@testable import Watchers

// Serialized: the thread-count check must not see another test's watcher thread.
@Suite(.serialized) struct NetlinkWatcherTests {
    /// Unprivileged and read-only: safe in any namespace.
    @Test func dumpsSynchronizesAndStopsCleanly() async throws {
        let threadsBefore = readerThreads()
        let watcher = try NetlinkWatcher.start()
        let recorder = EventRecorder(watcher.events)

        // Every namespace has lo, and the dump comes before `.synchronized`.
        let lo = await recorder.next { if case .link(name: "lo", index: _, up: _) = $0 { true } else { false } }
        #expect(lo != nil)
        // The thread names itself before reading, so by now it is visible.
        #expect(readerThreads() == threadsBefore + 1)
        #expect(await recorder.next { $0 == .synchronized } != nil)

        // A forced re-dump reports lo again and synchronises again.
        await recorder.mark()
        watcher.simulateOverflow()
        #expect(await recorder.next { if case .link(name: "lo", index: _, up: _) = $0 { true } else { false } } != nil)
        #expect(await recorder.next { $0 == .synchronized } != nil)

        watcher.stop()
        #expect(await recorder.ended(within: .seconds(5)))
        #expect(readerThreads() == threadsBefore)
    }

    @Test func consumerGoingAwayStopsTheReader() async throws {
        let threadsBefore = readerThreads()
        let watcher = try NetlinkWatcher.start()
        let consumer = Task { for await event in watcher.events where event == .synchronized { break } }
        await consumer.value  // leaving the loop terminates the stream, which wakes the reader
        watcher.stop()        // joins: returns once the thread has gone
        #expect(readerThreads() == threadsBefore)
    }

    /// With a receiver, the events go to it, on the watcher's thread and in the dump's order, and
    /// the stream has none.
    @Test func aReceiverGetsTheEventsOnTheWatchersThread() async throws {
        let threadsBefore = readerThreads()
        let (received, into) = AsyncStream.makeStream(of: NetlinkEvent.self)
        let threadNames = Mutex<Set<String>>([])
        let watcher = try NetlinkWatcher.start(receiver: .calling { event in
            let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "?"
            threadNames.withLock { _ = $0.insert(name.trimmingCharacters(in: .whitespacesAndNewlines)) }
            into.yield(event)
        })
        let recorder = EventRecorder(received)
        #expect(await recorder.next { if case .link(name: "lo", index: _, up: _) = $0 { true } else { false } } != nil)
        #expect(await recorder.next { $0 == .synchronized } != nil)
        #expect(threadNames.withLock { $0 } == ["vpnsup-netlink"])
        var streamed = 0
        for await _ in watcher.events { streamed += 1 }
        #expect(streamed == 0)
        watcher.stop()
        #expect(readerThreads() == threadsBefore)
    }

    @Test(.enabled(if: isolatedRootNetns, "needs root in a private network namespace (unshare --net)"))
    func reportsLinkAddressRouteAndRemoval() async throws {
        let (name, peer) = ("vnlw0", "vnlw1")
        _ = try? run("ip", "link", "del", name)
        try run("ip", "link", "add", name, "type", "veth", "peer", "name", peer)
        defer { _ = try? run("ip", "link", "del", name) }

        let watcher = try NetlinkWatcher.start()
        defer { watcher.stop() }
        let recorder = EventRecorder(watcher.events)

        // The dump reports the existing, down link.
        let dumped = try #require(await recorder.next {
            if case .link(name: name, index: _, up: false) = $0 { true } else { false }
        })
        guard case .link(_, let index, _) = dumped else { return }
        #expect(await recorder.next { $0 == .synchronized } != nil)

        let gateway = IPv4Interface("10.77.0.1/24")!
        await recorder.mark()
        try run("ip", "addr", "add", "10.77.0.1/24", "dev", name)
        #expect(await recorder.next { $0 == .address(interface: name, index: index, address: gateway, added: true) } != nil)

        // veth has carrier only once both ends are up.
        await recorder.mark()
        try run("ip", "link", "set", peer, "up")
        try run("ip", "link", "set", name, "up")
        #expect(await recorder.next { $0 == .link(name: name, index: index, up: true) } != nil)
        #expect(await recorder.next {
            $0 == .route(destination: gateway.network, gateway: nil, interfaceIndex: index, added: true)
        } != nil)

        await recorder.mark()
        try run("ip", "addr", "del", "10.77.0.1/24", "dev", name)
        #expect(await recorder.next { $0 == .address(interface: name, index: index, address: gateway, added: false) } != nil)

        await recorder.mark()
        try run("ip", "link", "del", name)
        #expect(await recorder.next { $0 == .linkRemoved(name: name, index: index) } != nil)
        #expect(await recorder.next {
            if case .linkRemoved(name: peer, index: _) = $0 { true } else { false }
        } != nil)
    }

    /// Events lost to a full receive buffer (ENOBUFS) are recovered by the re-dump: after the
    /// initial dump the reader is held back while a burst overflows a minimal buffer, then let go.
    @Test(.enabled(if: isolatedRootNetns, "needs root in a private network namespace (unshare --net)"))
    func eventsLostToOverflowAreRecoveredByTheRedump() async throws {
        let (name, peer) = ("vnlo0", "vnlo1")
        _ = try? run("ip", "link", "del", name)
        try run("ip", "link", "add", name, "type", "veth", "peer", "name", peer)
        defer { _ = try? run("ip", "link", "del", name) }

        let watcher = try NetlinkWatcher.start(receiveBufferSize: 1)  // 1: the kernel's minimum
        defer { watcher.stop() }
        let recorder = EventRecorder(watcher.events)
        #expect(await recorder.next { $0 == .synchronized } != nil)
        await recorder.mark()
        watcher.hold()

        let addresses = (1 ... 200).map { IPv4Interface(address: IPv4Address(10, 76, UInt8($0), 1), prefixLength: 24) }
        let batch = NSTemporaryDirectory() + "vpnsup-netlink-burst-\(getpid()).txt"
        try addresses.map { "addr add \($0) dev \(name)\n" }.joined().write(toFile: batch, atomically: true, encoding: .utf8)
        defer { unlink(batch) }
        try run("ip", "-batch", batch)  // 200 address (and local route) events into an unread socket
        watcher.release()

        var missing: [IPv4Interface] = []
        for address in addresses {
            // After one miss the rest are only looked up, so a regression fails fast.
            let found = await recorder.next(within: missing.isEmpty ? .seconds(10) : .zero) {
                if case .address(interface: name, index: _, address: address, added: true) = $0 { true } else { false }
            }
            if found == nil { missing.append(address) }
        }
        #expect(missing.isEmpty, "not reported: \(missing)")
        #expect(await recorder.next { $0 == .synchronized } != nil)
        #expect(watcher.overflows >= 1)
    }

    @Test func readerThreadRunsTheBodyOnANamedThreadAndJoins() throws {
        let seen = Mutex<(name: String, isMain: Bool)?>(nil)
        let thread = try ReaderThread.start(name: "vpnsup-test-thread-long-name") {
            seen.withLock { $0 = (currentThreadName(), Thread.isMainThread) }
        }
        thread.join()
        thread.join()  // a second join is harmless
        let result = try #require(seen.withLock { $0 })
        #expect(result.name == "vpnsup-test-thr")  // the kernel keeps 15 bytes
        #expect(!result.isMain)
    }
}

// MARK: - Helpers

/// Collects a stream's events; tests wait for a matching event with a bounded timeout.
private actor EventRecorder {
    private var events: [NetlinkEvent] = []
    private var start = 0
    private var finished = false
    private var waiters: [Int: (predicate: @Sendable (NetlinkEvent) -> Bool,
                                continuation: CheckedContinuation<NetlinkEvent?, Never>)] = [:]
    private var endWaiters: [Int: CheckedContinuation<Bool, Never>] = [:]
    private var nextID = 0

    init(_ stream: AsyncStream<NetlinkEvent>) {
        Task { [weak self] in
            for await event in stream { await self?.append(event) }
            await self?.finish()
        }
    }

    /// Later `next` calls only look at events that arrive from now on.
    func mark() { start = events.count }

    /// The first event since the mark that matches, waiting at most `timeout` for it.
    func next(within timeout: Duration = .seconds(10),
              where predicate: @escaping @Sendable (NetlinkEvent) -> Bool) async -> NetlinkEvent? {
        if let found = events[start...].first(where: predicate) { return found }
        if finished { return nil }
        nextID += 1
        let id = nextID
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.expire(id)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { waiters[id] = (predicate, $0) }
    }

    func next(where predicate: @escaping @Sendable (NetlinkEvent) -> Bool) async -> NetlinkEvent? {
        await next(within: .seconds(10), where: predicate)
    }

    /// Whether the stream ends within `timeout`.
    func ended(within timeout: Duration) async -> Bool {
        if finished { return true }
        nextID += 1
        let id = nextID
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.expire(id)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { endWaiters[id] = $0 }
    }

    private func append(_ event: NetlinkEvent) {
        events.append(event)
        for (id, waiter) in waiters where waiter.predicate(event) {
            waiters[id] = nil
            waiter.continuation.resume(returning: event)
        }
    }

    private func finish() {
        finished = true
        for waiter in waiters.values { waiter.continuation.resume(returning: nil) }
        for waiter in endWaiters.values { waiter.resume(returning: true) }
        waiters = [:]
        endWaiters = [:]
    }

    private func expire(_ id: Int) {
        waiters.removeValue(forKey: id)?.continuation.resume(returning: nil)
        endWaiters.removeValue(forKey: id)?.resume(returning: false)
    }
}

/// How many of this process's threads are netlink readers (named by the watcher).
private func readerThreads() -> Int {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.count { task in
        let comm = try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)
        return comm?.trimmingCharacters(in: .whitespacesAndNewlines) == "vpnsup-netlink"
    }
}

private func currentThreadName() -> String {
    let comm = try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)
    return comm?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
}

/// Root, in the network namespace `make test` made for the tests: only then may tests change
/// links. (Shared with NftablesMonitorTests.)
let isolatedRootNetns = IsolatedNetworkNamespace.isRootInside

private struct CommandFailed: Error, CustomStringConvertible {
    let description: String
}

/// Runs `command` (looked up on the sbin/bin paths) and returns its output; throws if it fails.
/// posix_spawn, not Foundation's Process: in a fresh namespace `lo` is down, Foundation cannot
/// make its loopback wake-up socket, and Process.waitUntilExit never returns.
@discardableResult
func run(_ command: String, _ arguments: String...) throws -> String {
    let path = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(command)" }
        .first { access($0, X_OK) == 0 } ?? command
    var pipeEnds: [Int32] = [0, 0]
    guard pipe(&pipeEnds) == 0 else { throw CommandFailed(description: "pipe: errno \(errno)") }
    _ = fcntl(pipeEnds[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(pipeEnds[1], F_SETFD, FD_CLOEXEC)
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 2)
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid = pid_t()
    let spawned = posix_spawn(&pid, path, &actions, nil, argv, environ)
    close(pipeEnds[1])
    defer { close(pipeEnds[0]) }
    guard spawned == 0 else { throw CommandFailed(description: "\(command): spawn errno \(spawned)") }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(pipeEnds[0], $0.baseAddress, $0.count) }
        if count > 0 { output += chunk[..<count] } else if count == 0 || errno != EINTR { break }
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0, errno == EINTR {}
    let text = String(decoding: output, as: UTF8.self)
    guard status == 0 else {  // 0: exited normally with status 0
        throw CommandFailed(description: "\(command) \(arguments.joined(separator: " ")) (wait status \(status)): \(text)")
    }
    return text
}

