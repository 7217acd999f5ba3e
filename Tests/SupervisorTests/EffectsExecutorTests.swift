import Glibc
@testable import Supervisor
import Testing

/// An actor on the effects' executor: its methods run on that executor's own thread.
private actor OnEffectsThread {
    let executor: EffectsExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private(set) var order: [Int] = []
    private(set) var threads = Set<pthread_t>()

    init(_ executor: EffectsExecutor) { self.executor = executor }

    func record(_ index: Int) {
        order.append(index)
        threads.insert(pthread_self())
    }
}

@Suite("The effects' executor")
struct EffectsExecutorTests {
    @Test func jobsRunInOrderOnOneThreadOfTheirOwn() async throws {
        let actor = OnEffectsThread(try EffectsExecutor.start(name: "vpnsup-test"))
        for index in 0..<200 { await actor.record(index) }
        #expect(await actor.order == Array(0..<200))
        let threads = await actor.threads
        #expect(threads.count == 1)
        #expect(!threads.contains(pthread_self()), "the effects never run on the caller's thread")
    }
}
