import SystemSupport
import Testing

/// TimerThread with real time and short delays. Timers fire earliest first, so a marker timer
/// scheduled after the others proves, once it fires, that none of them fired (or fired twice)
/// unseen: no sleep stands in for waiting.
@Suite("Timer thread")
struct TimerThreadTests {
    /// A timer thread whose firings arrive on a stream, in order.
    static func timers() throws -> (TimerThread<String>, AsyncStream<String>.Iterator) {
        let (fired, continuation) = AsyncStream.makeStream(of: String.self)
        let timers = try TimerThread<String>.start(name: "test-timers") { continuation.yield($0) }
        return (timers, fired.makeAsyncIterator())
    }

    /// The next `count` firings.
    static func next(_ count: Int, of fired: inout AsyncStream<String>.Iterator) async -> [String] {
        var ids: [String] = []
        for _ in 0..<count { if let id = await fired.next() { ids.append(id) } }
        return ids
    }

    @Test func timersFireEarliestFirstAndOnce() async throws {
        var (timers, fired) = try Self.timers()
        timers.schedule("late", after: .milliseconds(60))
        timers.schedule("early", after: .milliseconds(20))
        timers.schedule("now", after: .zero)
        timers.schedule("marker", after: .milliseconds(120))
        #expect(await Self.next(4, of: &fired) == ["now", "early", "late", "marker"])
    }

    @Test func aCancelledTimerNeverFiresAndTheNextOneStill() async throws {
        var (timers, fired) = try Self.timers()
        timers.schedule("cancelled", after: .milliseconds(20))
        timers.schedule("kept", after: .milliseconds(60))
        timers.cancel("cancelled")
        timers.cancel("never scheduled")
        #expect(await Self.next(1, of: &fired) == ["kept"])
    }

    @Test func schedulingAgainReplacesThePendingFiring() async throws {
        var (timers, fired) = try Self.timers()
        timers.schedule("moved", after: .seconds(30))
        timers.schedule("moved", after: .milliseconds(10))
        timers.schedule("marker", after: .milliseconds(80))
        #expect(await Self.next(2, of: &fired) == ["moved", "marker"], "rescheduled earlier, it fired once, before the marker")
        // And the other way round: moved later, it does not fire at the earlier time.
        timers.schedule("postponed", after: .milliseconds(10))
        timers.schedule("postponed", after: .seconds(30))
        timers.schedule("second marker", after: .milliseconds(80))
        #expect(await Self.next(1, of: &fired) == ["second marker"])
    }
}
