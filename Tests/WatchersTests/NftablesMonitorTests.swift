import Actions
import Foundation
import StateMachine
import Testing
@testable import Watchers

// The decoder against hand-built nfnetlink messages (no privileges), then the monitor against the
// kernel in a private network namespace: outside changes with `nft` are reported, commits through
// vpnsup's own Firewall socket are not.

@Suite struct NftablesDecoderTests {
    private let me: UInt32 = 777
    private let nft: UInt32 = 4242

    @Test func reportsAnOutsideTransactionOnceItsGenerationArrives() {
        var decoder = NftablesDecoder(table: "vpnsup", ignoring: [me])
        #expect(decoder.decode(Message.delRule(chain: "forward", handle: 7, port: nft)) == [])
        #expect(decoder.hasPending)
        let events = decoder.decode(Message.generation(id: 12, pid: 4242, name: "nft", port: nft))
        let expected = NftablesTransaction(table: "inet vpnsup", changes: [NftablesChange(.rule, added: false, chain: "forward", handle: 7)],
                                           portID: nft, generation: 12, processID: 4242, processName: "nft")
        #expect(events == [.changed(expected)])
        #expect(expected.description == "table inet vpnsup: rule deleted in chain forward (handle 7) by nft (pid 4242)")
        #expect(!decoder.hasPending)
    }

    @Test func aFlushIsOneReportWithCountedChanges() {
        var decoder = NftablesDecoder(table: "vpnsup")
        var bytes: [UInt8] = []
        for handle in 1 ... 3 { bytes += Message.delRule(chain: "input", handle: UInt64(handle), port: nft) }
        bytes += Message.delRule(chain: "forward", handle: 4, port: nft)
        for chain in ["input", "forward", "output"] { bytes += Message.delChain(chain, port: nft) }
        bytes += Message.delTable(port: nft)
        bytes += Message.generation(id: 13, pid: 99, name: "nft", port: nft)
        let events = decoder.decode(bytes)
        guard case .changed(let transaction)? = events.first, events.count == 1 else {
            Issue.record("expected one report, got \(events)")
            return
        }
        #expect(transaction.changes.count == 8)
        #expect(transaction.description == "table inet vpnsup: table deleted with 3 chains and 4 rules by nft (pid 99)")
    }

    @Test func alikeChangesAreCounted() {
        let changes = [NftablesChange(.rule, added: false, chain: "input", handle: 1), NftablesChange(.rule, added: false, chain: "input", handle: 2),
                       NftablesChange(.chain, added: true, chain: "extra"), NftablesChange(.rule, added: true, chain: "extra", handle: 9)]
        let transaction = NftablesTransaction(table: "inet vpnsup", changes: changes, portID: 3)
        #expect(transaction.description
                == "table inet vpnsup: 2 rules deleted in chain input, chain extra added, rule added to chain extra (handle 9) by netlink port 3")
    }

    @Test func ownCommitsOtherTablesAndOtherFamiliesAreNotReported() {
        var decoder = NftablesDecoder(table: "vpnsup", ignoring: [me])
        var bytes = Message.delTable(port: me) + Message.newTable(port: me) + Message.newChain("input", port: me)
        bytes += Message.generation(id: 1, pid: 1, name: "vpnsup", port: me)
        bytes += Message.newTable("other", port: nft) + Message.newTable(family: 2, port: nft) // ip vpnsup
        bytes += Message.generation(id: 2, pid: 2, name: "nft", port: nft)
        #expect(decoder.decode(bytes) == [])
        #expect(decoder.ignoredMessages == 4)
        #expect(!decoder.hasPending)
    }

    @Test func setsElementsAndDormantTablesAreReported() {
        var decoder = NftablesDecoder(table: "vpnsup")
        let bytes = Message.newTable(port: nft) + Message.newSetElements(set: "tcp_forwards", port: nft)
            + Message.generation(id: 3, pid: 5, name: nil, port: nft)
        let events = decoder.decode(bytes)
        guard case .changed(let transaction)? = events.first else {
            Issue.record("no report: \(events)")
            return
        }
        #expect(transaction.description == "table inet vpnsup: table added or updated, elements added to set tcp_forwards by pid 5")
    }

    @Test func aMissingGenerationStillReportsAndAnOverrunAsksForAResync() {
        var decoder = NftablesDecoder(table: "vpnsup")
        _ = decoder.decode(Message.delTable(port: nft))
        #expect(decoder.flush() == .changed(NftablesTransaction(table: "inet vpnsup", changes: [NftablesChange(.table, added: false)],
                                                                portID: nft)))
        #expect(decoder.flush() == nil)
        // A change from another port ends the previous transaction, whose end was lost.
        _ = decoder.decode(Message.delTable(port: nft))
        #expect(decoder.decode(Message.delTable(port: nft + 1)).count == 1)
        #expect(decoder.decode(Message.overrun()) == [.resync])
        #expect(!decoder.hasPending)  // what was seen of the transaction is dropped with the overrun
    }

    @Test func arbitraryBytesNeverTrap() {
        var decoder = NftablesDecoder(table: "vpnsup")
        var generator = SystemRandomNumberGenerator()
        let valid = Message.delRule(chain: "forward", handle: 1, port: nft) + Message.generation(id: 1, pid: 1, name: "x", port: nft)
        for _ in 0 ..< 2000 {
            var bytes = valid
            for _ in 0 ..< Int.random(in: 1 ... 6, using: &generator) {
                bytes[Int.random(in: 0 ..< bytes.count, using: &generator)] = UInt8.random(in: 0 ... 255, using: &generator)
            }
            bytes = Array(bytes.prefix(Int.random(in: 0 ... bytes.count, using: &generator)))
            _ = decoder.decode(bytes)
        }
    }
}

@Suite(.serialized) struct NftablesMonitorTests {
    /// Outside changes are reported, each as one report with who made it; vpnsup's own commits,
    /// other tables and other families are not. Each negative is proven by the next report being
    /// the marker change made after it (notifications arrive in commit order).
    @Test(.enabled(if: isolatedRootNetns, "needs root in a private network namespace (unshare --net)"))
    func reportsOutsideChangesButNotOwnCommits() async throws {
        let scratch = try Scratch("own")
        defer { scratch.remove() }
        let (firewall, monitor) = try scratch.inside { () throws -> (Firewall, NftablesMonitor) in
            let firewall = try Firewall()
            try firewall.commit(.lockdown)
            return (firewall, try NftablesMonitor.start(table: Ruleset.tableName, ignoring: [firewall.portID]))
        }
        defer { monitor.stop() }
        let inbox = Inbox(monitor.events)
        #expect(monitor.filteredInKernel)

        try firewall.commit(.lockdown)
        try scratch.nft("add rule inet vpnsup forward accept")
        let added = try #require(await inbox.nextChange())
        #expect(added.changes == [NftablesChange(.rule, added: true, chain: "forward", handle: added.changes.first?.handle)])
        #expect(added.processName == "nft" && added.processID != nil)
        #expect(added.description.hasPrefix("table inet vpnsup: rule added to chain forward (handle "))

        try scratch.nft("delete table inet vpnsup")
        let deleted = try #require(await inbox.nextChange())
        #expect(deleted.changes.last == NftablesChange(.table, added: false))
        #expect(deleted.changes.contains(NftablesChange(.chain, added: false, chain: "forward")))

        try firewall.commit(.lockdown)
        try scratch.nft("add table inet other")
        try scratch.nft("add table ip vpnsup")
        try scratch.nft("flush ruleset")
        let flushed = try #require(await inbox.nextChange())
        #expect(flushed.changes.last == NftablesChange(.table, added: false))
        #expect(flushed.changes.count == 5 + 3 + 1, "\(flushed)")  // the lockdown's rules, chains, table
        #expect(flushed.description.hasPrefix("table inet vpnsup: table deleted with 3 chains and 5 rules by nft (pid "))

        try firewall.commit(.lockdown)
        try scratch.nft("add table inet vpnsup '{ flags dormant; }'")
        let dormant = try #require(await inbox.nextChange())
        #expect(dormant.changes == [NftablesChange(.table, added: true)])

        #expect(monitor.ignoredMessages == 0, "the kernel filter let our own messages through")
        #expect(monitor.overflows == 0)
    }

    /// Without the kernel filter the decoder alone keeps vpnsup's own commits out.
    @Test(.enabled(if: isolatedRootNetns, "needs root in a private network namespace (unshare --net)"))
    func ownCommitsAreIgnoredInUserSpaceToo() async throws {
        let scratch = try Scratch("user")
        defer { scratch.remove() }
        let (firewall, monitor) = try scratch.inside { () throws -> (Firewall, NftablesMonitor) in
            let firewall = try Firewall()
            return (firewall, try NftablesMonitor.start(table: Ruleset.tableName, ignoring: [firewall.portID],
                                                        receiveBufferSize: 1 << 20, kernelFilter: false))
        }
        defer { monitor.stop() }
        let inbox = Inbox(monitor.events)
        #expect(!monitor.filteredInKernel)
        try firewall.commit(.lockdown)
        try firewall.commit(.lockdown)
        try scratch.nft("add rule inet vpnsup output accept")
        let marker = try #require(await inbox.nextChange())
        #expect(marker.changes == [NftablesChange(.rule, added: true, chain: "output", handle: marker.changes.first?.handle)])
        #expect(monitor.ignoredMessages > 0)
    }

    /// The filter is what keeps vpnsup's commits out: with a port that is not the Firewall's, its
    /// commit is reported like anyone else's, as made by this process.
    @Test(.enabled(if: isolatedRootNetns, "needs root in a private network namespace (unshare --net)"))
    func commitsFromAnUnlistedPortAreReported() async throws {
        let scratch = try Scratch("fake")
        defer { scratch.remove() }
        let (firewall, monitor) = try scratch.inside { () throws -> (Firewall, NftablesMonitor) in
            let firewall = try Firewall()
            return (firewall, try NftablesMonitor.start(table: Ruleset.tableName, ignoring: [firewall.portID &+ 1]))
        }
        defer { monitor.stop() }
        let inbox = Inbox(monitor.events)
        try firewall.commit(.lockdown)
        let own = try #require(await inbox.nextChange())
        #expect(own.portID == firewall.portID)
        // NFTA_GEN_PROC_PID is the committing task: one of this process's threads.
        #expect(own.processID.map { access("/proc/self/task/\($0)", F_OK) == 0 } == true)
        #expect(own.changes.first == NftablesChange(.table, added: true))
    }

    /// Notifications lost to a full receive buffer are reported as a resync, and the monitor
    /// goes on reporting afterwards.
    @Test(.enabled(if: isolatedRootNetns, "needs root in a private network namespace (unshare --net)"))
    func anOverrunIsReportedAsAResync() async throws {
        let scratch = try Scratch("overrun")
        defer { scratch.remove() }
        let monitor = try scratch.inside { () throws -> NftablesMonitor in
            let firewall = try Firewall()
            try firewall.commit(.lockdown)
            return try NftablesMonitor.start(table: Ruleset.tableName, ignoring: [firewall.portID],
                                             receiveBufferSize: 1, kernelFilter: true) // 1: the kernel's minimum
        }
        defer { monitor.stop() }
        let inbox = Inbox(monitor.events)
        monitor.hold()
        let batch = NSTemporaryDirectory() + "vpnsup-nft-burst-\(getpid()).nft"
        try (1 ... 300).map { "add rule inet vpnsup forward ip saddr 10.9.\($0 / 250).\($0 % 250) accept\n" }.joined()
            .write(toFile: batch, atomically: true, encoding: .utf8)
        defer { unlink(batch) }
        try scratch.nft("-f \(batch)")
        monitor.release()
        #expect(await inbox.next { $0 == .resync } != nil)
        #expect(monitor.overflows >= 1)

        // Small enough for the minimal buffer (deleting the 300 rules would overrun it again).
        try scratch.nft("add chain inet vpnsup extra")
        let after = await inbox.next { if case .changed(let t) = $0 { t.changes == [NftablesChange(.chain, added: true, chain: "extra")] } else { false } }
        #expect(after != nil)
    }

    @Test func stopEndsTheStream() async throws {
        let monitor = try NftablesMonitor.start(table: Ruleset.tableName, ignoring: [])
        let inbox = Inbox(monitor.events)
        monitor.stop()
        #expect(await inbox.ended(within: .seconds(5)))
    }
}

// MARK: - Helpers

/// Collects a monitor's events; tests take them in order, waiting a bounded time.
private actor Inbox {
    private var events: [NftablesEvent] = []
    private var taken = 0
    private var finished = false

    init(_ stream: AsyncStream<NftablesEvent>) {
        Task { [weak self] in
            for await event in stream { await self?.append(event) }
            await self?.finish()
        }
    }

    /// The next event matching `predicate` (those before it are consumed), or nil after `timeout`.
    func next(within timeout: Duration = .seconds(10), where predicate: (NftablesEvent) -> Bool = { _ in true }) async -> NftablesEvent? {
        let deadline = ContinuousClock.now + timeout
        while true {
            while taken < events.count {
                taken += 1
                if predicate(events[taken - 1]) { return events[taken - 1] }
            }
            if finished || ContinuousClock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(5))  // a test may poll; the monitor does not
        }
    }

    /// The next event, which must be a report of changes.
    func nextChange() async -> NftablesTransaction? {
        switch await next() {
        case .changed(let transaction)?: return transaction
        case let other?: Issue.record("expected a change, got \(other)"); return nil
        case nil: Issue.record("no report within 10 s"); return nil
        }
    }

    func ended(within timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !finished, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        return finished
    }

    private func append(_ event: NftablesEvent) { events.append(event) }
    private func finish() { finished = true }
}

/// nfnetlink messages as the kernel multicasts them (uapi numbers, spelled out on purpose: an
/// independent check of the constants the decoder takes from the headers).
private enum Message {
    static let newTable: UInt8 = 0, delTable: UInt8 = 2, newChain: UInt8 = 3, delChain: UInt8 = 5
    static let newRule: UInt8 = 6, delRule: UInt8 = 8, newSetElem: UInt8 = 12, newGen: UInt8 = 15
    static let inet: UInt8 = 1

    static func build(_ message: UInt8, family: UInt8 = inet, port: UInt32, _ attributes: [(UInt16, [UInt8])]) -> [UInt8] {
        var body: [UInt8] = [family, 0, 0, 0] // struct nfgenmsg
        for (type, payload) in attributes {
            body += le(UInt16(4 + payload.count)) + le(type) + payload
            while body.count % 4 != 0 { body.append(0) }
        }
        let type = UInt16(10) << 8 | UInt16(message) // NFNL_SUBSYS_NFTABLES
        return le(UInt32(16 + body.count)) + le(type) + le(UInt16(0)) + le(UInt32(0)) + le(port) + body
    }

    static func string(_ text: String) -> [UInt8] { Array(text.utf8) + [0] }
    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    static func be<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }

    static func newTable(_ name: String = "vpnsup", family: UInt8 = inet, port: UInt32) -> [UInt8] {
        build(newTable, family: family, port: port, [(1, string(name))])
    }
    static func delTable(port: UInt32) -> [UInt8] { build(delTable, port: port, [(1, string("vpnsup"))]) }
    static func newChain(_ name: String, port: UInt32) -> [UInt8] {
        build(newChain, port: port, [(1, string("vpnsup")), (3, string(name))])
    }
    static func delChain(_ name: String, port: UInt32) -> [UInt8] {
        build(delChain, port: port, [(1, string("vpnsup")), (3, string(name))])
    }
    static func delRule(chain: String, handle: UInt64, port: UInt32) -> [UInt8] {
        build(delRule, port: port, [(1, string("vpnsup")), (2, string(chain)), (3, be(handle))])
    }
    static func newSetElements(set: String, port: UInt32) -> [UInt8] {
        build(newSetElem, port: port, [(1, string("vpnsup")), (2, string(set)), (3 | 0x8000, [])])
    }
    static func generation(id: UInt32, pid: UInt32, name: String?, port: UInt32) -> [UInt8] {
        var attributes: [(UInt16, [UInt8])] = [(1, be(id)), (2, be(pid))]
        if let name { attributes.append((3, string(name))) }
        return build(newGen, family: 0, port: port, attributes)
    }
    static func overrun() -> [UInt8] { le(UInt32(16)) + le(UInt16(4)) + [UInt8](repeating: 0, count: 10) }
}

/// A named network namespace for one test. Other suites commit `inet vpnsup` in the shared
/// namespace in parallel, which would interleave with the changes a test expects.
private struct Scratch {
    let name: String

    init(_ label: String) throws {
        name = "vpnsup-nftmon-\(getpid())-\(label)"
        _ = try? run("ip", "netns", "del", name)
        try run("ip", "netns", "add", name)
    }

    func remove() { _ = try? run("ip", "netns", "del", name) }

    /// `nft ARGUMENTS` (a shell word list) inside the namespace.
    func nft(_ arguments: String) throws {
        try run("sh", "-c", "exec ip netns exec \(name) nft \(arguments)")
    }

    /// Runs `body` with the calling thread in the namespace, so that the sockets it opens (and
    /// the threads it starts) belong there; the thread is back in its own before this returns.
    /// Synchronous: no other task can run on the thread meanwhile.
    func inside<T>(_ body: () throws -> T) throws -> T {
        let own = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        let target = open("/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
        defer { close(own); close(target) }
        guard own >= 0, target >= 0, Self.setns(target) == 0 else { throw ScratchError(what: "entering \(name)", errno: errno) }
        defer { precondition(Self.setns(own) == 0, "could not return to the test's own network namespace") }
        return try body()
    }

    // setns(2) is not exported by Swift's Glibc module: look it up.
    private static func setns(_ descriptor: Int32) -> Int32 {
        typealias Call = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "setns") else { return -1 }
        return unsafeBitCast(symbol, to: Call.self)(descriptor, 0x4000_0000) // CLONE_NEWNET
    }
}

private struct ScratchError: Error, CustomStringConvertible {
    let what: String
    let errno: Int32
    var description: String { "\(what): errno \(errno)" }
}
