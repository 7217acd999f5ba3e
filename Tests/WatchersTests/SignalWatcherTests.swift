import Glibc
import StateMachine
import Testing
@testable import Watchers

/// The watcher reaps every child of its process, so it must not run in the shared test process:
/// other tests (the firewall's `nft` runs, OpenVPN here) wait for their own children and would
/// find them gone. Its scenarios run in a process of their own: this test binary again, filtered
/// to `SignalWatcherInProcessTests`, with `watcherProcessVariable` set.
let watcherProcessVariable = "VPNSUP_SIGNAL_WATCHER_PROCESS"
let isWatcherProcess = getenv(watcherProcessVariable) != nil

@Suite struct SignalWatcherTests {
    @Test(.enabled(if: !isWatcherProcess))
    func watcherScenariosPassInAProcessOfTheirOwn() async throws {
        let directory = TestSystem.temporaryDirectory()
        defer { TestSystem.removeTree(directory) }
        let output = directory + "/output"
        let pid = TestSystem.spawn("/proc/self/exe", ["--testing-library", "swift-testing", "--filter", "SignalWatcherInProcessTests"],
                                   output: output, extraEnvironment: ["\(watcherProcessVariable)=1"])
        let finished = await TestSystem.waitUntilExited(pid, timeout: .seconds(60))
        if !finished { kill(pid, SIGKILL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = TestSystem.readFile(output) ?? ""
        #expect(finished && status == 0, "\(text)")
        // The filter matched: the scenarios ran rather than nothing at all.
        #expect(text.contains("Suite SignalWatcherInProcessTests passed"), "\(text)")
    }

    @Test func signalMapping() {
        #expect(SignalWatcher.event(for: SIGTERM) == .terminate(SIGTERM))
        #expect(SignalWatcher.event(for: SIGINT) == .terminate(SIGINT))
        #expect(SignalWatcher.event(for: SIGHUP) == .reload)
        #expect(SignalWatcher.event(for: SIGUSR1) == nil)
        #expect(SignalWatcher.handledSignals.sorted() == [SIGHUP, SIGINT, SIGTERM, SIGCHLD].sorted())
    }

    @Test func decodesWaitStatuses() {
        #expect(ExitStatus(waitStatus: 0) == .exited(0))
        #expect(ExitStatus(waitStatus: 3 << 8) == .exited(3))
        #expect(ExitStatus(waitStatus: 255 << 8) == .exited(255))
        #expect(ExitStatus(waitStatus: 9) == .signaled(9))
        #expect(ExitStatus(waitStatus: 11 | 0x80) == .signaled(11))  // with a core dump
        #expect(ExitStatus(waitStatus: 0x137f) == nil)              // stopped by SIGSTOP
    }

}

/// One watcher for the watcher process (a process has one reaper; `start` runs once).
///
/// The test runner's threads do not block signals, so process-directed signals cannot be relied
/// on here: a SIGCHLD is discarded when the thread that spawned the child does not block it, and a
/// SIGHUP could reach (and kill) another thread. So the tests raise signals on the watcher thread
/// itself. It handles SIGCHLD and SIGHUP only: SIGTERM and SIGINT stay the runner's. In vpnsup
/// every thread blocks them (`blockHandledSignals` first thing in main).
enum SharedWatcher {
    static let watcher = try! SignalWatcher.start(signals: [SIGCHLD, SIGHUP])
    static let log = EventLog(watcher.events)

    /// Waits for `pid` to end, then wakes the watcher as its SIGCHLD would; returns what it reported.
    static func reportedExit(of pid: pid_t) async -> StateMachine.ExitStatus? {
        _ = log
        guard await TestSystem.waitUntilExited(pid) else { return nil }
        watcher.raiseOnWatcherThread(SIGCHLD)
        var status: StateMachine.ExitStatus?
        _ = await log.wait { events in
            status = events.lazy.compactMap { event -> StateMachine.ExitStatus? in
                if case .childExited(pid, let status) = event { status } else { nil }
            }.first
            return status != nil
        }
        return status
    }
}

@Suite(.enabled(if: isWatcherProcess)) struct SignalWatcherInProcessTests {
    @Test func reportsAnExitCode() async {
        let pid = TestSystem.spawn("/bin/sh", ["-c", "exit 3"])
        #expect(await SharedWatcher.reportedExit(of: pid) == .exited(3))
        // Reaped: no zombie left behind.
        #expect(TestSystem.readFile("/proc/\(pid)/stat") == nil)
    }

    @Test func reportsDeathBySignal() async {
        let pid = TestSystem.spawn("/bin/sleep", ["30"])
        kill(pid, SIGKILL)
        #expect(await SharedWatcher.reportedExit(of: pid) == .signaled(SIGKILL))
    }

    @Test func reapsEveryExitedChildOnOneSignal() async {
        // SIGCHLDs coalesce: one wake-up must collect all of them.
        let pids = (0..<4).map { TestSystem.spawn("/bin/sh", ["-c", "exit \(10 + $0)"]) }
        for pid in pids { #expect(await TestSystem.waitUntilExited(pid)) }
        _ = SharedWatcher.log
        SharedWatcher.watcher.raiseOnWatcherThread(SIGCHLD)
        let reported = await SharedWatcher.log.wait { events in
            pids.allSatisfy { pid in events.contains { if case .childExited(pid, _) = $0 { true } else { false } } }
        }
        #expect(reported)
        for (index, pid) in pids.enumerated() {
            #expect(SharedWatcher.log.items.contains(.childExited(pid: pid, status: .exited(Int32(10 + index)))))
        }
    }

    @Test func sighupMeansReload() async {
        _ = SharedWatcher.log
        let before = SharedWatcher.log.items.filter { $0 == .reload }.count
        SharedWatcher.watcher.raiseOnWatcherThread(SIGHUP)
        #expect(await SharedWatcher.log.wait { $0.filter { $0 == .reload }.count > before })
    }

    @Test func findsThreadsThatDoNotBlockTheSignals() {
        _ = SharedWatcher.watcher.runningThread()   // named and recorded
        #expect(SignalWatcher.threadsNotBlocking([]).isEmpty)
        // The test runner's threads do not block SIGHUP. The watcher's own thread is left out:
        // while it waits in sigwait the kernel lists the awaited signals as unblocked.
        let unblocked = SignalWatcher.threadsNotBlocking([SIGHUP, SIGCHLD])
        #expect(!unblocked.isEmpty)
        let watcherThread = threadIDs(named: "vpnsup-signals")
        #expect(watcherThread.count == 1)
        #expect(Set(watcherThread).isDisjoint(with: unblocked))
        // This thread blocks SIGUSR1 for a moment: it drops out of the list for SIGUSR1.
        let thisThread = threadIDs(named: nil, current: true)
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGUSR1)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let whileBlocked = SignalWatcher.threadsNotBlocking([SIGUSR1])
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        #expect(thisThread.count == 1)
        #expect(Set(thisThread).isDisjoint(with: whileBlocked))
        #expect(Set(thisThread).isSubset(of: SignalWatcher.threadsNotBlocking([SIGUSR1])))
    }

    /// Thread ids by name, or the calling thread's (through /proc/thread-self).
    private func threadIDs(named name: String?, current: Bool = false) -> [Int32] {
        if current {
            var buffer = [CChar](repeating: 0, count: 64)
            let count = readlink("/proc/thread-self", &buffer, 63)
            let link = String(decoding: buffer[0..<max(0, count)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return link.split(separator: "/").last.flatMap { Int32($0) }.map { [$0] } ?? []
        }
        guard let directory = opendir("/proc/self/task") else { return [] }
        defer { closedir(directory) }
        var result: [Int32] = []
        while let entry = readdir(directory) {
            let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let id = Int32(tid), let name, TestSystem.readFile("/proc/self/task/\(tid)/comm") == name + "\n" {
                result.append(id)
            }
        }
        return result
    }
}
