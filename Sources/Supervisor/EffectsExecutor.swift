import Dispatch
import Synchronization
import Watchers

/// A serial executor on a thread of its own, for the effects: firewall commits and read-backs,
/// rtnetlink requests, file reads, spawning and signals block, and must occupy neither the
/// interpreter's actor nor a thread of Swift's cooperative pool. One thread for the process's
/// lifetime, so the thread count stays constant.
final class EffectsExecutor: SerialExecutor {
    private let jobs = Mutex<[UnownedJob]>([])
    private let available = DispatchSemaphore(value: 0)

    private init() {}

    static func start(name: String) throws -> EffectsExecutor {
        let executor = EffectsExecutor()
        try ReaderThread.start(name: name) { executor.serve() }
        return executor
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        jobs.withLock { $0.append(job) }
        available.signal()
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    private func serve() -> Never {
        while true {
            available.wait()
            let job = jobs.withLock { $0.removeFirst() }
            job.runSynchronously(on: asUnownedSerialExecutor())
        }
    }
}
