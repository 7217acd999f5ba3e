import CSystemd

/// sd_notify(3) reporting to systemd when vpnsup runs as a `Type=notify` service. sd_notify does
/// nothing when NOTIFY_SOCKET is unset, so this is safe everywhere.
public struct ServiceNotifier: Sendable {
    public init() {}

    /// The tunnel is up for the first time: the service has started.
    public func ready() { send("READY=1") }
    public func status(_ text: String) { send("STATUS=" + text.replacingOccurrences(of: "\n", with: " ")) }
    public func stopping() { send("STOPPING=1") }

    private func send(_ message: String) {
        _ = sd_notify(0, message)
    }
}

private extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
