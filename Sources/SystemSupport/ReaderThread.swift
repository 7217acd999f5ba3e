import CNetlink
import Glibc
import Synchronization

/// A dedicated OS thread for a blocking reader, so blocking reads never occupy a thread of Swift's
/// cooperative pool.
public final class ReaderThread: Sendable {
    private let thread: pthread_t
    /// Whether the thread has been joined or detached: either may happen once only.
    private let released = Mutex(false)

    private init(thread: pthread_t) { self.thread = thread }

    /// Starts `body` on a new thread named `name` (the kernel keeps the first 15 bytes).
    @discardableResult
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) -> ReaderThread {
        // A C thread entry point cannot capture, so the closure travels as the context pointer.
        let context = Unmanaged.passRetained(Start(name: name, body: body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { context in
            guard let context else { return nil }
            let start = Unmanaged<Start>.fromOpaque(context).takeRetainedValue()
            vpnsup_set_thread_name(start.name)  // the kernel truncates to 15 bytes
            start.body()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<Start>.fromOpaque(context).release()
            throw SystemError(operation: "pthread_create", errno: result)
        }
        return ReaderThread(thread: thread)
    }

    /// Runs `body` on a thread of its own and returns what it returns, or nil once `timeout` has
    /// passed or the calling task is cancelled, whichever comes first. A body stuck in a system
    /// call (a file on a hung network file system) cannot be interrupted: its thread ends when the
    /// call returns and its result is dropped; the caller is not kept waiting for it.
    public static func value<Value: Sendable>(name: String, timeout: Duration,
                                              _ body: @escaping @Sendable () -> Value) async throws(SystemError) -> Value? {
        let handoff = Handoff<Value>()
        try start(name: name) { handoff.deliver(body()) }
        return await withTaskGroup(of: Value?.self) { group in
            group.addTask { await handoff.wait() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// Whether the caller is running on this thread.
    public var isCurrent: Bool { pthread_equal(thread, pthread_self()) != 0 }

    /// Waits for the body to return. Does nothing on the thread itself (which would deadlock) or
    /// once another call has joined (or is joining) it.
    public func join() {
        guard !isCurrent, claim() else { return }
        pthread_join(thread, nil)
    }

    deinit {
        // Nobody will join: let the thread's resources go when it ends.
        if claim() { pthread_detach(thread) }
    }

    private func claim() -> Bool {
        released.withLock { released in
            defer { released = true }
            return !released
        }
    }

    private final class Start: Sendable {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }
}

/// One value passed from a thread to one waiting task, which may give up first (cancellation).
private final class Handoff<Value: Sendable>: Sendable {
    private enum State {
        case empty
        case delivered(Value)
        case waiting(CheckedContinuation<Value?, Never>)
        case finished
    }

    private let state = Mutex(State.empty)

    func deliver(_ value: Value) {
        let waiter: CheckedContinuation<Value?, Never>? = state.withLock { state in
            switch state {
            case .empty:
                state = .delivered(value)
                return nil
            case .waiting(let continuation):
                state = .finished
                return continuation
            case .delivered, .finished:
                return nil
            }
        }
        waiter?.resume(returning: value)
    }

    func wait() async -> Value? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready: Value?? = state.withLock { state in
                    switch state {
                    case .empty:
                        state = .waiting(continuation)
                        return nil
                    case .delivered(let value):
                        state = .finished
                        return .some(value)
                    case .finished:
                        return .some(nil)  // cancelled before waiting
                    case .waiting:
                        preconditionFailure("one waiter only")
                    }
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let waiter: CheckedContinuation<Value?, Never>? = state.withLock { state in
                switch state {
                case .waiting(let continuation):
                    state = .finished
                    return continuation
                case .empty:
                    state = .finished
                    return nil
                case .delivered, .finished:
                    return nil
                }
            }
            waiter?.resume(returning: nil)
        }
    }
}

/// An eventfd another thread can signal to wake a reader blocked in poll(2), e.g. to stop it.
/// The descriptor is closed when the last reference goes.
public final class WakeupEvent: Sendable {
    /// The descriptor to poll for POLLIN.
    public let descriptor: Int32

    public init() throws(SystemError) {
        descriptor = eventfd(0, vpnsup_eventfd_flags())
        guard descriptor >= 0 else { throw SystemError("eventfd") }
    }

    /// Wakes the reader; safe from any thread, any number of times.
    public func signal() {
        var one: UInt64 = 1
        _ = write(descriptor, &one, MemoryLayout<UInt64>.size)
    }

    /// Clears pending signals (the descriptor is non-blocking, so this never waits).
    public func drain() {
        var count: UInt64 = 0
        _ = read(descriptor, &count, MemoryLayout<UInt64>.size)
    }

    /// Waits until signalled, then clears it.
    public func waitAndDrain() {
        var ready = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        _ = try? retryingInterrupts("poll") { poll(&ready, 1, -1) }
        drain()
    }

    deinit { close(descriptor) }
}
