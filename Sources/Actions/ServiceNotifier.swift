import CSystemd
import Glibc

/// sd_notify(3) reporting to systemd when vpnsup runs as a `Type=notify` service. sd_notify does
/// nothing when NOTIFY_SOCKET is unset, so this is safe everywhere.
public struct ServiceNotifier: Sendable {
    public init() {}

    /// The tunnel is up for the first time: the service has started.
    public func ready() { send("READY=1") }
    public func status(_ text: String) { send("STATUS=" + text.replacingOccurrences(of: "\n", with: " ")) }
    public func stopping() { send("STOPPING=1") }
    /// The keep-alive ping of `WatchdogSec=`.
    public func watchdog() { send("WATCHDOG=1") }

    /// The watchdog interval the service manager asks for: WATCHDOG_USEC is set (and WATCHDOG_PID
    /// is unset or names this process) and there is a NOTIFY_SOCKET to send the pings to.
    public static func watchdogInterval() -> Duration? {
        guard getenv("NOTIFY_SOCKET") != nil else { return nil }
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return .microseconds(Int64(clamping: usec))
    }

    private func send(_ message: String) {
        _ = sd_notify(0, message)
    }
}

private extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
