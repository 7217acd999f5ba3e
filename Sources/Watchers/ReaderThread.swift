import CMnl
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
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) throws -> ReaderThread {
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
            throw ReaderThreadError(call: "pthread_create", errno: result)
        }
        return ReaderThread(thread: thread)
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

/// Starting a reader thread or its wake-up descriptor failed.
public struct ReaderThreadError: Error, CustomStringConvertible, Sendable, Hashable {
    public let call: String
    public let errno: Int32
    public var description: String { "\(call): \(String(cString: strerror(errno)))" }
}

/// An eventfd another thread can signal to wake a reader blocked in poll(2), e.g. to stop it.
/// The descriptor is closed when the last reference goes.
public final class WakeupEvent: Sendable {
    /// The descriptor to poll for POLLIN.
    public let descriptor: Int32

    public init() throws {
        descriptor = eventfd(0, vpnsup_eventfd_flags())
        guard descriptor >= 0 else { throw ReaderThreadError(call: "eventfd", errno: errno) }
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

    deinit { close(descriptor) }
}

/// The receive loop both netlink readers share: datagrams until the socket would block.
enum NetlinkReceiver {
    /// Calls `message` with each datagram, and `overflow` when the kernel dropped messages
    /// (ENOBUFS, `truncated` false) or cut one too long for `buffer` (`truncated` true). Returns
    /// true once the socket would block, false as soon as a callback or the socket says the reader
    /// must end.
    static func drain(_ descriptor: Int32, into buffer: inout [UInt8], message: ([UInt8]) -> Bool,
                      overflow: (_ truncated: Bool) -> Bool) -> Bool {
        while true {
            let count = buffer.withUnsafeMutableBytes {
                // MSG_TRUNC: report the real length, so a truncated datagram is noticed.
                recv(descriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_TRUNC))
            }
            if count < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK: return true
                case EINTR: continue
                case ENOBUFS: guard overflow(false) else { return false }
                default: return false
                }
            } else if count > buffer.count {
                guard overflow(true) else { return false }
            } else if !message(Array(buffer[..<count])) {
                return false
            }
        }
    }
}
