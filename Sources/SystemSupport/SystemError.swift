import Glibc

/// A failed system call or kernel request: what was being done, the errno, and the kernel's own
/// explanation when it gave one (a netlink extended ACK). The one error type of the system layer.
public struct SystemError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What was being done, e.g. `"bind /run/vpnsup/status.sock"`.
    public var operation: String
    public var errno: Int32
    /// The kernel's text (NLMSGERR_ATTR_MSG), if any.
    public var message: String?

    public init(operation: String, errno: Int32, message: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.message = message
    }

    /// The error of the call that just failed: reads `errno` now.
    public init(_ operation: String) {
        self.init(operation: operation, errno: Glibc.errno)
    }

    /// `"bind /run/vpnsup/status.sock: Permission denied"`, with ` (kernel text)` when there is one.
    public var description: String {
        "\(operation): \(Self.text(errno))" + (message.map { " (\($0))" } ?? "")
    }

    /// strerror(3) of `code`.
    public static func text(_ code: Int32) -> String { String(cString: strerror(code)) }
}

/// Runs a system call that returns -1 and sets errno on failure (open, read, recv, poll, ...),
/// again for as long as a signal interrupts it (EINTR), and returns its result or throws.
///
/// Callers that treat some errno as an answer rather than a failure (EAGAIN on a non-blocking
/// socket) catch it: `catch where error.errno == EAGAIN`.
@discardableResult
public func retryingInterrupts<Result: BinaryInteger>(
    _ operation: @autoclosure () -> String, _ call: () -> Result
) throws(SystemError) -> Result {
    while true {
        let result = call()
        if result != -1 { return result }
        let code = errno
        if code != EINTR { throw SystemError(operation: operation(), errno: code) }
    }
}

/// For calls that return an errno instead of setting it (pthread_*, posix_spawn*): 0 is success.
public func checkingReturnedErrno(_ operation: @autoclosure () -> String, _ code: Int32) throws(SystemError) {
    if code != 0 { throw SystemError(operation: operation(), errno: code) }
}
