import Glibc

/// A file descriptor this object owns: closed when the object goes, and by nothing else.
public final class OwnedDescriptor: Sendable {
    public let rawValue: Int32

    /// Takes ownership of `rawValue` (which must be open).
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    deinit { close(rawValue) }

    /// fstat(2).
    public func status(_ operation: @autoclosure () -> String) throws(SystemError) -> stat {
        var info = stat()
        try retryingInterrupts(operation()) { fstat(rawValue, &info) }
        return info
    }
}

/// What `awaitReadiness` saw.
public enum Readiness: Sendable, Equatable {
    case ready
    case deadlinePassed
}

/// Waits in poll(2) until `descriptor` is ready for `events` (POLLIN, POLLOUT) or `deadline`
/// passes. An error or hang-up on the descriptor counts as ready: the next call reports it.
public func awaitReadiness(_ descriptor: Int32, for events: Int16,
                           until deadline: ContinuousClock.Instant) throws(SystemError) -> Readiness {
    var entry = pollfd(fd: descriptor, events: events, revents: 0)
    while true {
        let timeout = pollTimeout(until: deadline)
        guard timeout > 0 else { return .deadlinePassed }
        // Not retryingInterrupts: after a signal the timeout is computed again from the deadline.
        let ready = poll(&entry, 1, timeout)
        if ready > 0 { return .ready }
        if ready < 0, errno != EINTR { throw SystemError("poll") }
    }
}

/// Milliseconds from now to `deadline` for poll(2), rounded up so a wait never ends just before
/// the deadline and spins; 0 once it has passed.
public func pollTimeout(until deadline: ContinuousClock.Instant) -> Int32 {
    let remaining = deadline - ContinuousClock.now
    guard remaining > .zero else { return 0 }
    let (seconds, attoseconds) = remaining.components
    return Int32(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
}
