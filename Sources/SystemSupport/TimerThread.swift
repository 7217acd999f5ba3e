import CNetlink
import Glibc
import Synchronization

/// Timers served by one thread of their own, asleep on a timerfd set to the earliest deadline.
/// Scheduling or cancelling one re-arms the kernel's timer from the calling thread, without
/// waking the timer thread; it wakes only when a deadline passes, and hands each timer due to
/// `fire`. Against a task sleeping per timer (a task spawned, a dispatch timer registered, two
/// threads woken at expiry) a timer costs one wake-up.
///
/// Deadlines are on CLOCK_BOOTTIME, the clock of Swift's `ContinuousClock` on Linux: time spent
/// suspended counts.
///
/// Inlinable, so that each client's timers are specialised for its ID type: unspecialised, the
/// thread's dictionary work looked its generic types up at run time on every expiry, which cost
/// more than the rest of the wake-up.
public final class TimerThread<ID: Hashable & Sendable>: Sendable {
    @usableFromInline
    struct Book {
        /// Deadline by timer, in nanoseconds of CLOCK_BOOTTIME.
        @usableFromInline var deadlines: [ID: UInt64] = [:]
        /// What the timerfd is set to (nil: disarmed).
        @usableFromInline var armed: UInt64?

        @usableFromInline init() {}
    }

    @usableFromInline let book = Mutex(Book())
    @usableFromInline let timer: OwnedDescriptor

    @usableFromInline init(timer: OwnedDescriptor) { self.timer = timer }

    /// Starts the thread; `fire` runs on it, once per timer due, earliest first.
    @inlinable
    public static func start(name: String, fire: @escaping @Sendable (ID) -> Void) throws(SystemError) -> TimerThread {
        let descriptor = timerfd_create(CLOCK_BOOTTIME, Int32(TFD_CLOEXEC))
        guard descriptor >= 0 else { throw SystemError(operation: "timerfd_create", errno: errno) }
        let timers = TimerThread(timer: OwnedDescriptor(descriptor))
        try ReaderThread.start(name: name) { timers.serve(fire) }
        return timers
    }

    /// Schedules `id` to fire after `delay`, in place of any pending firing of it.
    @inlinable
    public func schedule(_ id: ID, after delay: Duration) {
        let (seconds, attoseconds) = delay.components
        let nanoseconds = max(0, seconds) * 1_000_000_000 + max(0, attoseconds) / 1_000_000_000
        let deadline = Self.now() &+ UInt64(nanoseconds)
        book.withLock { book in
            book.deadlines[id] = deadline
            rearm(&book)
        }
    }

    /// Cancels `id`'s pending firing, if any.
    @inlinable
    public func cancel(_ id: ID) {
        book.withLock { book in
            guard book.deadlines.removeValue(forKey: id) != nil else { return }
            rearm(&book)
        }
    }

    /// Sets the timerfd to the earliest deadline, if that changed.
    @inlinable
    func rearm(_ book: inout Book) {
        let earliest = book.deadlines.values.min()
        guard earliest != book.armed else { return }
        var setting = itimerspec()
        if let earliest {
            // 0 disarms: a deadline already past is set to 1 ns, which has passed too.
            let at = max(earliest, 1)
            setting.it_value = timespec(tv_sec: Int(at / 1_000_000_000), tv_nsec: Int(at % 1_000_000_000))
        }
        if timerfd_settime(timer.rawValue, Int32(TFD_TIMER_ABSTIME), &setting, nil) == 0 {
            book.armed = earliest
        }
    }

    @inlinable
    func serve(_ fire: @Sendable (ID) -> Void) {
        var expirations: UInt64 = 0
        while true {
            // Blocks until the timerfd expires (forever while disarmed).
            let count = read(timer.rawValue, &expirations, MemoryLayout<UInt64>.size)
            if count < 0, errno != EINTR, errno != EAGAIN { return }
            let now = Self.now()
            let due = book.withLock { book -> [ID] in
                let due = book.deadlines.filter { $0.value <= now }.sorted { $0.value < $1.value }.map { $0.key }
                for id in due { book.deadlines[id] = nil }
                // The kernel disarmed the timer when it expired.
                book.armed = nil
                rearm(&book)
                return due
            }
            due.forEach(fire)
        }
    }

    @inlinable
    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_BOOTTIME, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}
