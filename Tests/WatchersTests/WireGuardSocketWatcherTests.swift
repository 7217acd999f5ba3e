import Foundation
import Glibc
import Testing
@testable import Watchers

// The watcher over a directory of its own (no root needed): a unix socket bound there is what
// wireguard-go's bind looks like to inotify. The real wireguard-go is in ActionsTests.WireGuardGoTests.

private func scratchDirectory() throws -> String {
    let path = "/tmp/vpnsup-wgwatch-\(getpid())-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    return path
}

/// Binds (and listens on) a unix socket at `path`; the descriptor is the caller's to close.
private func bindSocket(_ path: String) -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        let bytes = Array(path.utf8)
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    #expect(bound == 0, "bind \(path): errno \(errno)")
    listen(fd, 4)
    return fd
}

@Suite("WireGuard socket watcher")
struct WireGuardSocketWatcherTests {
    @Test func reportsTheSocketWhenItIsCreated() async throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let watcher = try WireGuardSocketWatcher(interface: "wgt0", directory: directory)
        #expect(!watcher.socketExists)
        let clock = ContinuousClock()
        let start = clock.now
        // Another name first (another router's device), then ours, 150 ms later.
        let maker = Thread {
            usleep(50_000)
            let other = bindSocket("\(directory)/wgt1.sock")
            _ = FileManager.default.createFile(atPath: "\(directory)/wgt0.sock.tmp", contents: nil)
            usleep(100_000)
            let ours = bindSocket("\(directory)/wgt0.sock")
            close(other)
            close(ours)
        }
        maker.start()
        let outcome = try watcher.wait(until: clock.now + .seconds(5))
        let waited = clock.now - start
        #expect(outcome == .appeared)
        #expect(watcher.socketExists)
        #expect(waited >= .milliseconds(140), "not fooled by the other names: \(waited)")
        print("socket reported \(waited) after the wait began (created at 150 ms)")
    }

    @Test func anExistingSocketIsReportedAtOnce() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fd = bindSocket("\(directory)/wgt0.sock")
        defer { close(fd) }
        let watcher = try WireGuardSocketWatcher(interface: "wgt0", directory: directory)
        #expect(try watcher.wait(until: ContinuousClock.now + .milliseconds(1)) == .appeared)
    }

    @Test func aPlainFileOfThatNameIsNotTheSocket() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = FileManager.default.createFile(atPath: "\(directory)/wgt0.sock", contents: nil)
        let watcher = try WireGuardSocketWatcher(interface: "wgt0", directory: directory)
        #expect(!watcher.socketExists)
    }

    @Test func timesOutAndIsWoken() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let watcher = try WireGuardSocketWatcher(interface: "wgt0", directory: directory)
        let clock = ContinuousClock()
        let start = clock.now
        #expect(try watcher.wait(until: start + .milliseconds(100)) == .timedOut)
        #expect(clock.now - start >= .milliseconds(100))

        let wakeup = try WakeupEvent()
        let waker = Thread {
            usleep(50_000)
            wakeup.signal()
        }
        waker.start()
        #expect(try watcher.wait(until: clock.now + .seconds(5), wakeup: wakeup) == .woken)
    }

    @Test func theDirectoryIsCreatedWhenMissing() throws {
        let parent = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let watcher = try WireGuardSocketWatcher(interface: "wgt0", directory: "\(parent)/wireguard")
        var info = stat()
        #expect(stat("\(parent)/wireguard", &info) == 0 && info.st_mode & S_IFMT == S_IFDIR)
        _ = watcher
    }

    /// Event buffers as the kernel lays them out; a length that overruns the buffer stops decoding.
    @Test func decodesEventNames() {
        func event(mask: UInt32, name: String, padTo: Int) -> [UInt8] {
            var bytes: [UInt8] = []
            for value in [UInt32(1), mask, 0, UInt32(padTo)] { withUnsafeBytes(of: value) { bytes += $0 } }
            return bytes + Array(name.utf8) + Array(repeating: 0, count: padTo - name.utf8.count)
        }
        let buffer = event(mask: UInt32(IN_CREATE), name: "wg0.sock", padTo: 16) + event(mask: UInt32(IN_IGNORED), name: "", padTo: 0)
        let names = WireGuardSocketWatcher.names(in: buffer[...])
        #expect(names.map(\.name) == ["wg0.sock", ""])
        #expect(names.map(\.ignored) == [false, true])
        var lying = event(mask: UInt32(IN_CREATE), name: "wg0.sock", padTo: 16)
        lying[12] = 200
        #expect(WireGuardSocketWatcher.names(in: lying[...]).isEmpty)
    }
}
