import Synchronization
@testable import Supervisor
import Testing

@Suite("Items held until opened")
struct HeldUntilOpenedTests {
    private final class Received: Sendable {
        let items = Mutex<[Int]>([])
        func append(_ item: Int) { items.withLock { $0.append(item) } }
        var all: [Int] { items.withLock { $0 } }
    }

    @Test func nothingPassesBeforeOpenThenAllInOrder() {
        let received = Received()
        let held = HeldUntilOpened<Int>()
        for item in 0..<5 { held.send(item) }
        #expect(received.all.isEmpty)
        held.open { received.append($0) }
        #expect(received.all == [0, 1, 2, 3, 4])
        held.send(5)
        #expect(received.all == [0, 1, 2, 3, 4, 5], "after open, an item passes as it is sent")
        let other = Received()
        held.open { other.append($0) }
        held.send(6)
        #expect(received.all == [0, 1, 2, 3, 4, 5, 6], "a second open changes nothing")
        #expect(other.all.isEmpty)
    }

    /// A sender on another thread while `open()` passes the held items on: none of its items
    /// overtakes a held one, and none is lost or doubled.
    @Test func aSenderRacingTheOpeningNeverOvertakesTheHeldItems() async {
        for _ in 0..<50 {
            let received = Received()
            let held = HeldUntilOpened<Int>()
            for item in 0..<100 { held.send(item) }
            await withTaskGroup(of: Void.self) { group in
                group.addTask { for item in 100..<300 { held.send(item) } }
                group.addTask { held.open { received.append($0) } }
            }
            #expect(received.all == Array(0..<300))
        }
    }
}
