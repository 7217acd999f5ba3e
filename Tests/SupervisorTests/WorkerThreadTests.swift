import Glibc
import Synchronization
@testable import Supervisor
import Testing

@Suite("A worker thread")
struct WorkerThreadTests {
    /// Every piece runs, in the order handed over, on one thread that is not the caller's: the
    /// thread is made once, not once per piece.
    @Test func piecesRunInOrderOnOneThreadOfItsOwn() async throws {
        let worker = WorkerThread(name: "vpnsup-test")
        let seen = Mutex<(order: [Int], threads: Set<pthread_t>)>(([], []))
        let (done, finished) = AsyncStream.makeStream(of: Void.self)
        for index in 0..<100 {
            try worker.run {
                seen.withLock { $0.order.append(index); $0.threads.insert(pthread_self()) }
                if index == 99 { finished.yield() }
            }
        }
        for await _ in done { break }
        let (order, threads) = seen.withLock { ($0.order, $0.threads) }
        #expect(order == Array(0..<100))
        #expect(threads.count == 1)
        #expect(!threads.contains(pthread_self()))
    }
}
