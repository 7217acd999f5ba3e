import Foundation
import Glibc
import Testing
@testable import vpnsup

/// The systemd side of a `Type=notify` service: a unix datagram socket at NOTIFY_SOCKET that
/// collects what vpnsup sends while it runs.
final class NotifySocket: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let lock = NSLock()
    private var received: [String] = []
    private var stopping = false
    private let done = DispatchSemaphore(value: 0)

    init(directory: URL) throws {
        path = directory.appendingPathComponent("notify.sock").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw POSIXError(.ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: bytes)
            buffer[bytes.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        Thread.detachNewThread { [self] in receive() }
    }

    private func receive() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count > 0 {
                // One datagram may carry several newline-separated assignments.
                let lines = String(decoding: buffer[..<count], as: UTF8.self).split(separator: "\n").map(String.init)
                lock.withLock { received += lines }
            } else if lock.withLock({ stopping }) {
                break
            }
        }
        done.signal()
    }

    /// Stops receiving once the queue is empty; returns every assignment in the order it arrived.
    func finish() -> [String] {
        lock.withLock { stopping = true }
        done.wait()
        close(fd)
        return lock.withLock { received }
    }
}

/// `vpnsup run` in a network namespace of its own, terminated with SIGTERM after `seconds`.
func runIsolatedThenTerminate(after seconds: String, _ arguments: [String], environment: [String: String]) throws -> Outcome {
    let script = """
    ip link add vsteth0 type veth peer name vsteth1 || exit 99
    "$@" & pid=$!
    sleep \(seconds)
    kill -TERM $pid
    wait $pid
    """
    return try execute("/usr/bin/unshare", ["--net", "--", "/bin/sh", "-c", script, "vpnsup", vpnsupBinary()] + arguments,
                       environment: environment)
}

@Suite
struct ServiceNotifierTests {
    /// The remote is unreachable (the namespace has no route): vpnsup stays in TunnelConnecting.
    static func run(_ overrides: [String: String], notify: Bool) throws -> (Outcome, [String]) {
        let directory = try RunCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let socket = notify ? try NotifySocket(directory: directory) : nil
        var environment = RunCommandTests.environment(directory, overrides)
        if let socket { environment["NOTIFY_SOCKET"] = socket.path }
        let outcome = try runIsolatedThenTerminate(after: "1.5", ["run"], environment: environment)
        return (outcome, socket?.finish() ?? [])
    }

    @Test(.enabled(if: isolatedRoot))
    func reportsStatesWatchdogAndStoppingButNotReady() throws {
        let (outcome, messages) = try Self.run(["WATCHDOG_USEC": "200000"], notify: true)
        #expect(outcome.status == 0, "\(outcome.stderr)")

        let states = messages.filter { $0.hasPrefix("STATUS=") }.map { String($0.dropFirst("STATUS=".count)) }
        let stateNames = states.map { $0.split(separator: " ").first.map(String.init) ?? "" }
        #expect(Array(stateNames.prefix(3)) == ["Init", "AddressAssigned", "TunnelConnecting"], "\(states)")
        #expect(!stateNames.contains("TunnelUp"), "\(states)")

        let pings = messages.filter { $0 == "WATCHDOG=1" }.count
        #expect(pings >= 3, "every 100 ms for 1.5 s, got \(pings): \(messages)")
        #expect(!messages.contains("READY=1"), "the tunnel never came up: \(messages)")
        #expect(messages.last == "STOPPING=1", "\(messages)")
        #expect(messages.filter { $0 == "STOPPING=1" }.count == 1)
        #expect(messages.allSatisfy { $0.hasPrefix("STATUS=") || $0 == "WATCHDOG=1" || $0 == "STOPPING=1" }, "\(messages)")
    }

    /// WATCHDOG_PID names another process: the watchdog is not vpnsup's, but the states still are.
    @Test(.enabled(if: isolatedRoot))
    func noWatchdogPingsForAnotherProcess() throws {
        let (outcome, messages) = try Self.run(["WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"], notify: true)
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(!messages.contains("WATCHDOG=1"), "\(messages)")
        #expect(messages.first == "STATUS=Init", "\(messages)")
        #expect(messages.last == "STOPPING=1", "\(messages)")
    }

    /// No NOTIFY_SOCKET (not run by systemd): WATCHDOG_USEC alone starts no watchdog, and vpnsup
    /// runs and stops as usual.
    @Test(.enabled(if: isolatedRoot))
    func runsWithoutNotifySocket() throws {
        let (outcome, _) = try Self.run(["WATCHDOG_USEC": "200000"], notify: false)
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("TunnelConnecting"), "\(outcome.stderr)")
        #expect(!outcome.stderr.contains("systemd watchdog"), "\(outcome.stderr)")
    }
}
