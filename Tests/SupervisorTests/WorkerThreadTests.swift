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

    /// Started ahead of its work, the thread is the one the work then runs on: `start()` twice
    /// and the pieces after it make one thread.
    @Test func startedAheadItIsTheSameThread() async throws {
        let worker = WorkerThread(name: "vpnsup-test")
        try worker.start()
        try worker.start()
        let threads = Mutex<Set<pthread_t>>([])
        let (done, finished) = AsyncStream.makeStream(of: Void.self)
        for index in 0..<3 {
            try worker.run {
                threads.withLock { _ = $0.insert(pthread_self()) }
                if index == 2 { finished.yield() }
            }
        }
        for await _ in done { break }
        #expect(threads.withLock { $0.count } == 1)
    }
}
