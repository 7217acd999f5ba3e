import Synchronization
import SystemSupport
import Testing

/// TimerThread with real time: short delays, and generous waits for what must not happen.
@Suite("Timer thread")
struct TimerThreadTests {
    final class Fired: Sendable {
        let ids = Mutex<[String]>([])
        func append(_ id: String) { ids.withLock { $0.append(id) } }
        var all: [String] { ids.withLock { $0 } }
    }

    /// Waits (polling every 5 ms, up to 5 s) until `fired` holds `count` firings.
    func wait(for count: Int, in fired: Fired) async throws {
        for _ in 0..<1000 where fired.all.count < count {
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test func timersFireEarliestFirstAndOnce() async throws {
        let fired = Fired()
        let timers = try TimerThread<String>.start(name: "test-timers") { fired.append($0) }
        timers.schedule("late", after: .milliseconds(60))
        timers.schedule("early", after: .milliseconds(20))
        timers.schedule("now", after: .zero)
        try await wait(for: 3, in: fired)
        try await Task.sleep(for: .milliseconds(100))
        #expect(fired.all == ["now", "early", "late"])
    }

    @Test func aCancelledTimerNeverFiresAndTheNextOneStill() async throws {
        let fired = Fired()
        let timers = try TimerThread<String>.start(name: "test-timers") { fired.append($0) }
        timers.schedule("cancelled", after: .milliseconds(20))
        timers.schedule("kept", after: .milliseconds(60))
        timers.cancel("cancelled")
        timers.cancel("never scheduled")
        try await wait(for: 1, in: fired)
        try await Task.sleep(for: .milliseconds(100))
        #expect(fired.all == ["kept"])
    }

    @Test func schedulingAgainReplacesThePendingFiring() async throws {
        let fired = Fired()
        let timers = try TimerThread<String>.start(name: "test-timers") { fired.append($0) }
        timers.schedule("moved", after: .seconds(30))
        timers.schedule("moved", after: .milliseconds(10))
        timers.schedule("marker", after: .milliseconds(80))
        try await wait(for: 2, in: fired)
        #expect(fired.all == ["moved", "marker"], "rescheduled earlier, it fired once, before the marker")
        // And the other way round: moved later, it does not fire at the earlier time.
        timers.schedule("postponed", after: .milliseconds(10))
        timers.schedule("postponed", after: .seconds(30))
        timers.schedule("second marker", after: .milliseconds(80))
        try await wait(for: 3, in: fired)
        try await Task.sleep(for: .milliseconds(50))
        #expect(fired.all == ["moved", "marker", "second marker"])
    }
}
