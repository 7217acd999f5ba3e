import Foundation

/// FirewallHandover keeps one Firewall for the whole process, and the test targets share one
/// process: tests that commit-and-keep and take take this lock for their whole body.
public enum HandoverLock {
    private static let lock = NSLock()

    public static func exclusively<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }
}
