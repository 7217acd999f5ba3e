import CNftnl
import Glibc
import StateMachine
import SystemSupport

/// Why the firewall could not do what it was asked; `description` is meant for the log.
public struct FirewallError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Hashable, Sendable {
        /// A system call failed (socket, send, receive, memory).
        case system
        /// The kernel refused the transaction; nothing of it was applied.
        case rejected
        /// The kernel accepted the transaction but reading the table back did not match it.
        case verification
        /// The ruleset cannot be expressed (e.g. an interface name longer than 15 bytes).
        case invalidRuleset
        /// The ruleset changed while it was being read back; reading again may succeed.
        case interrupted
    }

    public var kind: Kind
    /// What was being done and what went wrong.
    public var message: String
    /// The errno from the system or the kernel, if there was one.
    public var errno: Int32?
    /// The kernel's own explanation (netlink extended ACK), if it gave one.
    public var kernelMessage: String?

    public init(kind: Kind, message: String, errno: Int32? = nil, kernelMessage: String? = nil) {
        self.kind = kind
        self.message = message
        self.errno = errno
        self.kernelMessage = kernelMessage
    }

    public var description: String {
        var text = message
        if let errno { text += ": \(String(cString: strerror(errno))) (errno \(errno))" }
        if let kernelMessage { text += " — kernel: \(kernelMessage)" }
        return text
    }

    /// A failed system call, as the system layer reports it.
    init(_ error: SystemError) {
        self.init(kind: .system, message: "\(error.operation) failed", errno: error.errno)
    }

    static func outOfMemory(_ function: String) -> FirewallError {
        FirewallError(kind: .system, message: "\(function) failed", errno: ENOMEM)
    }

    init(kernel error: NftKernelError, doing: String, otherErrors: Int = 0) {
        var message = "the kernel rejected \(doing)"
        if let missing = error.ack.missingAttribute { message += " (missing attribute \(missing))" }
        if otherErrors > 0 { message += " (and \(otherErrors) more message\(otherErrors == 1 ? "" : "s") of the batch)" }
        // A negative errno in an ACK is malformed; report it as a protocol error.
        self.init(kind: .rejected, message: message, errno: error.ack.errno < 0 ? EPROTO : error.ack.errno,
                  kernelMessage: error.ack.message)
    }
}

/// What the `counter` expressions of one chain have counted.
public struct FirewallCounter: Hashable, Sendable {
    public var packets: UInt64
    public var bytes: UInt64

    public init(packets: UInt64, bytes: UInt64) {
        self.packets = packets
        self.bytes = bytes
    }
}

/// The `inet vpnsup` table in the kernel, driven over one NETLINK_NETFILTER socket with libnftnl.
/// Not Sendable: it is meant to be owned by a single actor.
public final class Firewall {
    let socket: NftSocket
    let table = Ruleset.tableName
    /// Attempts at reading the table back when a concurrent change interrupts the dump.
    private static let dumpAttempts = 3

    public init() throws(FirewallError) {
        socket = try NftSocket()
    }

    /// The netlink port of the socket every commit is sent from. The kernel stamps it on the
    /// nftables notifications of those commits, which tells the monitor they are vpnsup's own.
    public var portID: UInt32 { socket.portID }

    /// Replaces table `inet vpnsup` with `ruleset` in one transaction, then reads the table back
    /// and checks that the kernel holds exactly the maps, chains and rules that were sent.
    public func commit(_ ruleset: Ruleset) throws(FirewallError) {
        _ = try commit(ruleset, readingGeneration: false)
    }

    /// Commits `ruleset` as `commit(_:)` does and, with `readingGeneration`, returns the ruleset
    /// generation read between the commit and its read-back (nil if it could not be read). The
    /// read-back comes after, so the table was verified at that generation: if the generation is
    /// still that later, the kernel still holds what was committed. (Read before the read-back
    /// instead, an outside commit between the two would be taken for ours.)
    public func commit(_ ruleset: Ruleset, readingGeneration: Bool) throws(FirewallError) -> UInt32? {
        // Translate everything first: nothing reaches the kernel if any rule cannot be expressed.
        let plan = try NftCommitPlan(ruleset, table: table)
        let batch = socket.makeBatch()
        try plan.append(to: batch)
        batch.finish()

        let result = try socket.send(batch)
        if let first = result.errors.first {
            throw FirewallError(kernel: first, doing: batch.descriptions[first.sequence] ?? "message \(first.sequence)",
                                otherErrors: result.errors.count - 1)
        }

        let generation = readingGeneration ? try? generation() : nil
        // Some kernels accept a batch yet lack a feature: trust only what reads back.
        try verify(plan, lostReplies: result.lostReplies)
        return generation
    }

    /// Throws `.verification` unless the kernel holds exactly the maps (with every element),
    /// chains and rules of `plan`.
    private func verify(_ plan: NftCommitPlan, lostReplies: Bool) throws(FirewallError) {
        let differences = try mapDifferences(expected: plan.maps)
            + NftChainState.differences(expected: plan.chains, actual: try readTable())
        guard differences.isEmpty else {
            var message = "table inet \(table) does not match what was committed: " + differences.joined(separator: "; ")
            if lostReplies { message += " (some kernel replies were lost to a full receive buffer)" }
            throw FirewallError(kind: .verification, message: message)
        }
    }

    /// How table inet vpnsup, as the kernel holds it now, differs from `ruleset` (empty when it
    /// matches): what `commit` verifies, read back again, e.g. when change notifications were lost.
    public func differences(from ruleset: Ruleset) throws(FirewallError) -> [String] {
        let plan = try NftCommitPlan(ruleset, table: table)
        return try mapDifferences(expected: plan.maps)
            + NftChainState.differences(expected: plan.chains, actual: try readTable())
    }

    /// Packets and bytes counted by the `counter` rules of each chain (summed per chain), as the
    /// kernel has them now. Chains without counted rules are absent; no table gives [:].
    public func dropCounters() throws(FirewallError) -> [String: FirewallCounter] {
        try retryingInterruptedDumps { () throws(FirewallError) in
            var counters: [String: FirewallCounter] = [:]
            try dumpRules { chain, rule throws(FirewallError) in
                try rule.forEachExpression { name, expr in
                    guard name == "counter" else { return }
                    var counter = counters[chain, default: FirewallCounter(packets: 0, bytes: 0)]
                    counter.packets &+= nftnl_expr_get_u64(expr, nftAttr(NFTNL_EXPR_CTR_PACKETS))
                    counter.bytes &+= nftnl_expr_get_u64(expr, nftAttr(NFTNL_EXPR_CTR_BYTES))
                    counters[chain] = counter
                }
            }
            return counters
        }
    }

    /// The ruleset's generation: the kernel counts every committed nftables transaction of the
    /// network namespace, whatever its table. The same generation later means nothing was
    /// committed in between.
    public func generation() throws(FirewallError) -> UInt32 {
        var generation: UInt32?
        try socket.request(type: msg(NFT_MSG_GETGEN), payload: { _ in }) { nlh throws(FirewallError) in
            guard let gen = nftnl_gen_alloc() else { throw FirewallError(kind: .system, message: "nftnl_gen_alloc failed") }
            defer { nftnl_gen_free(gen) }
            guard nftnl_gen_nlmsg_parse(nlh, gen) >= 0 else {
                throw FirewallError(kind: .system, message: "could not parse the ruleset generation")
            }
            generation = nftnl_gen_get_u32(gen, UInt16(NFTNL_GEN_ID))
        }
        guard let generation else { throw FirewallError(kind: .system, message: "the kernel sent no ruleset generation") }
        return generation
    }

    /// Deletes table `inet vpnsup` if it exists; afterwards nothing of vpnsup filters traffic.
    public func deleteTable() throws(FirewallError) {
        let nftTable = try NftTable(name: table)
        let batch = socket.makeBatch()
        // Adding first makes the delete succeed whether or not the table was there.
        batch.append("add table inet \(table)", type: msg(NFT_MSG_NEWTABLE), flags: NLM_F_CREATE) {
            nftnl_table_nlmsg_build_payload($0, nftTable.pointer)
        }
        batch.append("delete table inet \(table)", type: msg(NFT_MSG_DELTABLE), flags: 0) {
            nftnl_table_nlmsg_build_payload($0, nftTable.pointer)
        }
        batch.finish()
        let result = try socket.send(batch)
        if let first = result.errors.first {
            throw FirewallError(kernel: first, doing: batch.descriptions[first.sequence] ?? "message \(first.sequence)",
                                otherErrors: result.errors.count - 1)
        }
        if try tableExists() {
            throw FirewallError(kind: .verification, message: "table inet \(table) still exists after deleting it")
        }
    }

    // MARK: - Reading back

    private func tableExists() throws(FirewallError) -> Bool {
        let nftTable = try NftTable(name: table)
        do {
            try socket.request(type: msg(NFT_MSG_GETTABLE), payload: { nftnl_table_nlmsg_build_payload($0, nftTable.pointer) }) { _ in }
            return true
        } catch where error.errno == ENOENT && error.kind == .rejected {
            return false
        }
    }

    /// The chains of the table with the expression names of their rules, in kernel order.
    func readTable() throws(FirewallError) -> [NftChainState] {
        try retryingInterruptedDumps { () throws(FirewallError) in
            var chains: [NftChainState] = []
            let filter = try NftChain()
            nftnl_chain_set_str(filter.pointer, nftAttr(NFTNL_CHAIN_TABLE), table)
            try socket.dump(type: msg(NFT_MSG_GETCHAIN), payload: { nftnl_chain_nlmsg_build_payload($0, filter.pointer) }) {
                nlh throws(FirewallError) in
                let chain = try NftChain()
                guard nftnl_chain_nlmsg_parse(nlh, chain.pointer) >= 0 else {
                    throw FirewallError(kind: .system, message: "could not parse a chain the kernel dumped")
                }
                // Older kernels ignore the table filter of a chain dump: filter here as well.
                guard chain.string(NFTNL_CHAIN_TABLE) == table, let name = chain.string(NFTNL_CHAIN_NAME) else { return }
                chains.append(NftChainState(name: name, type: chain.string(NFTNL_CHAIN_TYPE),
                                            hook: chain.u32(NFTNL_CHAIN_HOOKNUM), priority: chain.s32(NFTNL_CHAIN_PRIO),
                                            policy: chain.u32(NFTNL_CHAIN_POLICY), rules: []))
            }
            try dumpRules { chainName, rule throws(FirewallError) in
                var names: [String] = []
                try rule.forEachExpression { name, _ in names.append(name) }
                if let index = chains.firstIndex(where: { $0.name == chainName }) {
                    chains[index].rules.append(names)
                } else {
                    // A rule in a chain the chain dump did not show: report it as its own chain.
                    chains.append(NftChainState(name: chainName, type: nil, hook: nil, priority: nil, policy: nil, rules: [names]))
                }
            }
            return chains
        }
    }

    /// How the maps in the kernel differ from `expected`. The kernel dumps a hash set by walking
    /// it and skipping what earlier reply messages covered; while the hash table is being resized
    /// (deferred work after a large insert, e.g. just after a commit of thousands of forwards) that
    /// walk can repeat or skip elements, and nothing flags it (measured here: about one commit in
    /// five with 15,000 elements in one map). A torn dump does not survive a second reading; a real
    /// difference does: read again, briefly, before believing one.
    func mapDifferences(expected: [NftMapState]) throws(FirewallError) -> [String] {
        var differences = NftMapState.differences(expected: expected, actual: try readMaps())
        for pause in Firewall.mapRereadPauses where !differences.isEmpty {
            usleep(pause)
            differences = NftMapState.differences(expected: expected, actual: try readMaps())
        }
        return differences
    }

    /// Microseconds to wait before each re-reading of the maps (40 ms in all).
    private static let mapRereadPauses: [UInt32] = [1_000, 4_000, 10_000, 25_000]

    /// The maps of the table with their elements (sorted by public port).
    func readMaps() throws(FirewallError) -> [NftMapState] {
        try retryingInterruptedDumps { () throws(FirewallError) in
            var maps: [NftMapState] = []
            let filter = try NftSet()
            nftnl_set_set_str(filter.pointer, nftAttr(NFTNL_SET_TABLE), table)
            try socket.dump(type: msg(NFT_MSG_GETSET), payload: { nftnl_set_nlmsg_build_payload($0, filter.pointer) }) {
                nlh throws(FirewallError) in
                let set = try NftSet()
                guard nftnl_set_nlmsg_parse(nlh, set.pointer) >= 0 else {
                    throw FirewallError(kind: .system, message: "could not parse a set the kernel dumped")
                }
                guard set.string(NFTNL_SET_TABLE) == table, let name = set.string(NFTNL_SET_NAME) else { return }
                maps.append(NftMapState(name: name, flags: set.u32(NFTNL_SET_FLAGS),
                                        keyType: set.u32(NFTNL_SET_KEY_TYPE), keyLength: set.u32(NFTNL_SET_KEY_LEN),
                                        dataType: set.u32(NFTNL_SET_DATA_TYPE), dataLength: set.u32(NFTNL_SET_DATA_LEN),
                                        entries: []))
            }
            for index in maps.indices {
                // One set collects the elements of every reply of the dump.
                let elements = try NftSet(name: maps[index].name, table: table)
                try socket.dump(type: msg(NFT_MSG_GETSETELEM), payload: { nftnl_set_elems_nlmsg_build_payload($0, elements.pointer) }) {
                    nlh throws(FirewallError) in
                    guard nftnl_set_elems_nlmsg_parse(nlh, elements.pointer) >= 0 else {
                        throw FirewallError(kind: .system, message: "could not parse the elements of map \(maps[index].name)")
                    }
                }
                var entries: [ForwardMap.Entry] = []
                var malformed = 0
                try elements.forEachElement { key, data in
                    if let entry = ForwardMap.Entry(nftKey: key, data: data) { entries.append(entry) } else { malformed += 1 }
                }
                maps[index].entries = entries.sorted { $0.publicPort < $1.publicPort }
                maps[index].malformedElements = malformed
            }
            return maps
        }
    }

    /// Calls `body` with the chain name and parsed rule of every rule of the table.
    private func dumpRules(_ body: (String, NftRule) throws(FirewallError) -> Void) throws(FirewallError) {
        let filter = try NftRule()
        nftnl_rule_set_str(filter.pointer, nftAttr(NFTNL_RULE_TABLE), table)
        try socket.dump(type: msg(NFT_MSG_GETRULE), payload: { nftnl_rule_nlmsg_build_payload($0, filter.pointer) }) {
            nlh throws(FirewallError) in
            let rule = try NftRule()
            guard nftnl_rule_nlmsg_parse(nlh, rule.pointer) >= 0 else {
                throw FirewallError(kind: .system, message: "could not parse a rule the kernel dumped")
            }
            guard rule.string(NFTNL_RULE_TABLE) == table, let chain = rule.string(NFTNL_RULE_CHAIN) else { return }
            try body(chain, rule)
        }
    }

    private func retryingInterruptedDumps<T>(_ read: () throws(FirewallError) -> T) throws(FirewallError) -> T {
        var attempt = 1
        while true {
            do {
                return try read()
            } catch where error.kind == .interrupted && attempt < Firewall.dumpAttempts {
                attempt += 1
            }
        }
    }
}

/// NFT_MSG_* values import as a struct (a named C enum); the batch API wants the raw value.
@inline(__always) func msg(_ type: nf_tables_msg_types) -> UInt32 { type.rawValue }
