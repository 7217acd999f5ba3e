import Glibc
import Synchronization
import Testing
@testable import SystemSupport

@Suite struct SystemCallTests {
    @Test func aFailureCarriesTheOperationAndTheErrnoText() {
        let error = #expect(throws: SystemError.self) {
            try retryingInterrupts("open /nonexistent/vpnsup") { open("/nonexistent/vpnsup", O_RDONLY) }
        }
        #expect(error?.errno == ENOENT)
        #expect(error?.description == "open /nonexistent/vpnsup: No such file or directory")
        #expect(SystemError(operation: "add 10.0.0.1/24 to eth1", errno: EINVAL, message: "Invalid prefix length").description
                == "add 10.0.0.1/24 to eth1: Invalid argument (Invalid prefix length)")
    }

    /// A signal that interrupts a blocking read (a handler installed without SA_RESTART) is
    /// retried: the caller sees the data, not EINTR.
    @Test func anInterruptedCallIsRetried() async throws {
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)
        let (reader, writer) = (OwnedDescriptor(ends[0]), OwnedDescriptor(ends[1]))
        // SIGURG's default is to ignore it; with a handler and no SA_RESTART it interrupts read(2).
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        var previous = sigaction()
        #expect(sigaction(SIGURG, &action, &previous) == 0)
        defer { sigaction(SIGURG, &previous, nil) }

        let interruptions = Atomic(0)
        let readerThread = Mutex<pthread_t?>(nil)
        let outcome = Mutex<Int?>(nil)
        let thread = try ReaderThread.start(name: "vpnsup-test-eintr") {
            // Threads started from Swift's pool inherit its mask, which blocks signals.
            var urgent = sigset_t()
            sigemptyset(&urgent)
            sigaddset(&urgent, SIGURG)
            pthread_sigmask(SIG_UNBLOCK, &urgent, nil)
            readerThread.withLock { $0 = pthread_self() }
            var byte: UInt8 = 0
            let count = try? retryingInterrupts("read") { () -> Int in
                let result = read(reader.rawValue, &byte, 1)
                if result < 0 && errno == EINTR { interruptions.add(1, ordering: .relaxed) }
                return result
            }
            outcome.withLock { $0 = count }
        }
        while readerThread.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(1)) }
        // Signal until one has landed inside the read.
        while interruptions.load(ordering: .relaxed) == 0 {
            pthread_kill(readerThread.withLock { $0 }!, SIGURG)
            try await Task.sleep(for: .milliseconds(5))
        }
        var one: UInt8 = 1
        #expect(write(writer.rawValue, &one, 1) == 1)
        thread.join()
        #expect(outcome.withLock { $0 } == 1)
    }
}

@Suite struct ReaderThreadValueTests {
    @Test func returnsTheBodysValue() async throws {
        let value = try await ReaderThread.value(name: "vpnsup-test", timeout: .seconds(5)) { 42 }
        #expect(value == 42)
    }

    /// A body stuck in a blocking system call (read(2) on a pipe nobody writes: what a file on a
    /// hung network file system does) does not hold the caller past the deadline; the thread
    /// finishes once the call returns.
    @Test func givesUpAtTheDeadlineWhileTheBodyBlocks() async throws {
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)
        let (reader, writer) = (OwnedDescriptor(ends[0]), OwnedDescriptor(ends[1]))
        let finished = Atomic(false)
        let started = ContinuousClock.now
        let value = try await ReaderThread.value(name: "vpnsup-test-hang", timeout: .milliseconds(200)) { () -> Int in
            var byte: UInt8 = 0
            let count = read(reader.rawValue, &byte, 1)
            finished.store(true, ordering: .relaxed)
            return count
        }
        #expect(value == nil)
        #expect(ContinuousClock.now - started >= .milliseconds(200))
        // The answer came while the body was still blocked: the caller did not wait for it.
        let returnedEarly = finished.load(ordering: .relaxed)
        #expect(!returnedEarly)
        var one: UInt8 = 1
        #expect(write(writer.rawValue, &one, 1) == 1)
        let deadline = ContinuousClock.now + .seconds(5)
        while !finished.load(ordering: .relaxed) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        let returned = finished.load(ordering: .relaxed)
        #expect(returned)
    }

    @Test func cancellationEndsTheWait() async throws {
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)
        let (reader, writer) = (OwnedDescriptor(ends[0]), OwnedDescriptor(ends[1]))
        let finished = Atomic(false)
        let task = Task {
            try await ReaderThread.value(name: "vpnsup-test-cancel", timeout: .seconds(600)) { () -> Int in
                var byte: UInt8 = 0
                defer { finished.store(true, ordering: .relaxed) }
                return read(reader.rawValue, &byte, 1)
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        task.cancel()
        let value = try await task.value
        #expect(value == nil)
        // Neither the timeout nor the body ended the wait: the cancellation did.
        let returnedEarly = finished.load(ordering: .relaxed)
        #expect(!returnedEarly)
        var one: UInt8 = 1
        #expect(write(writer.rawValue, &one, 1) == 1)  // lets the thread end
    }
}
