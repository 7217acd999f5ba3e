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

        // Some kernels accept a batch yet lack a feature: trust only what reads back.
        try verify(plan, lostReplies: result.lostReplies)
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

/// Everything one commit sends, translated and checked before any of it reaches the kernel.
struct NftCommitPlan {
    let ruleset: Ruleset
    let table: String
    /// Each map's number within the batch (1, 2, ...): rules and elements refer to it, since the
    /// map does not exist by name until the batch commits.
    let mapIDs: [String: UInt32]
    let maps: [NftMapState]
    let chains: [NftChainState]

    init(_ ruleset: Ruleset, table: String) throws(FirewallError) {
        self.ruleset = ruleset
        self.table = table
        var ids: [String: UInt32] = [:]
        for (index, map) in ruleset.maps.enumerated() {
            guard ids[map.name] == nil else {
                throw FirewallError(kind: .invalidRuleset, message: "map \(abbreviated(map.name)) is defined twice")
            }
            ids[map.name] = UInt32(index + 1)
            // The kernel would refuse a duplicate key too, but only after sending thousands of elements.
            var ports = Set<UInt16>()
            for entry in map.entries where !ports.insert(entry.publicPort).inserted {
                throw FirewallError(kind: .invalidRuleset,
                                    message: "map \(abbreviated(map.name)) forwards public port \(entry.publicPort) twice")
            }
        }
        mapIDs = ids
        maps = ruleset.maps.map(NftMapState.init)
        do throws(NftTranslationError) {
            chains = try ruleset.chains.map { chain throws(NftTranslationError) in
                NftChainState(chain, rules: try chain.rules.map { rule throws(NftTranslationError) in
                    try NftTranslator.expressions(for: rule, maps: ids)
                })
            }
        } catch {
            throw FirewallError(kind: .invalidRuleset, message: error.description)
        }
    }

    /// Appends the transaction to `batch`: add, delete, add the table (all of it commits or none
    /// does: the delete cannot fail, since the table exists by then, and the final add starts
    /// from nothing whether or not the table existed), then the maps with their elements, then
    /// the chains with their rules (which may refer to the maps).
    func append(to batch: NftBatch) throws(FirewallError) {
        let nftTable = try NftTable(name: table)
        batch.append("add table inet \(table)", type: msg(NFT_MSG_NEWTABLE), flags: NLM_F_CREATE) {
            nftnl_table_nlmsg_build_payload($0, nftTable.pointer)
        }
        batch.append("delete table inet \(table)", type: msg(NFT_MSG_DELTABLE), flags: 0) {
            nftnl_table_nlmsg_build_payload($0, nftTable.pointer)
        }
        batch.append("add table inet \(table)", type: msg(NFT_MSG_NEWTABLE), flags: NLM_F_CREATE) {
            nftnl_table_nlmsg_build_payload($0, nftTable.pointer)
        }
        for map in ruleset.maps {
            let id = mapIDs[map.name]!
            let definition = try NftSet(definitionOf: map, table: table, id: id)
            // EXCL, here and for elements: the table is new, so anything existing is a duplicate.
            batch.append("map \(abbreviated(map.name)) (\(map.entries.count) elements)",
                         type: msg(NFT_MSG_NEWSET), flags: NLM_F_CREATE | NLM_F_EXCL) {
                nftnl_set_nlmsg_build_payload($0, definition.pointer)
            }
            // Split so that each message's element list stays under its 64 KiB length limit.
            for start in stride(from: 0, to: map.entries.count, by: ForwardMapFormat.elementsPerMessage) {
                let end = min(start + ForwardMapFormat.elementsPerMessage, map.entries.count)
                let elements = try NftSet(elements: map.entries[start..<end], of: map, table: table, id: id)
                batch.append("elements \(start + 1)-\(end) of map \(abbreviated(map.name))",
                             type: msg(NFT_MSG_NEWSETELEM), flags: NLM_F_CREATE | NLM_F_EXCL) {
                    nftnl_set_elems_nlmsg_build_payload($0, elements.pointer)
                }
            }
        }
        for (chain, state) in zip(ruleset.chains, chains) {
            let nftChain = try NftChain(chain, table: table)
            batch.append("chain \(abbreviated(chain.name)) (type \(chain.kind.rawValue) hook \(chain.hook.rawValue) priority \(chain.priority))",
                         // EXCL: the table is new, so an existing chain means a duplicate name,
                         // which CREATE alone would silently merge into one chain.
                         type: msg(NFT_MSG_NEWCHAIN), flags: NLM_F_CREATE | NLM_F_EXCL) {
                nftnl_chain_nlmsg_build_payload($0, nftChain.pointer)
            }
            for (index, (rule, expressions)) in zip(chain.rules, state.expressions).enumerated() {
                let nftRule = try NftRule(table: table, chain: chain.name, expressions: expressions)
                batch.append("rule \(index + 1) of chain \(abbreviated(chain.name)) (\(rule.nftText))",
                             type: msg(NFT_MSG_NEWRULE), flags: NLM_F_CREATE | NLM_F_APPEND) {
                    nftnl_rule_nlmsg_build_payload($0, nftRule.pointer)
                }
            }
        }
    }
}

/// A map as committed or as read back.
struct NftMapState: Equatable {
    var name: String
    var flags: UInt32?
    var keyType: UInt32?
    var keyLength: UInt32?
    var dataType: UInt32?
    var dataLength: UInt32?
    /// Sorted by public port.
    var entries: [ForwardMap.Entry]
    /// Elements read back whose key or data is not in `ForwardMapFormat` (never expected).
    var malformedElements = 0

    init(name: String, flags: UInt32?, keyType: UInt32?, keyLength: UInt32?, dataType: UInt32?, dataLength: UInt32?,
         entries: [ForwardMap.Entry]) {
        self.name = name
        self.flags = flags
        self.keyType = keyType
        self.keyLength = keyLength
        self.dataType = dataType
        self.dataLength = dataLength
        self.entries = entries
    }

    init(_ map: ForwardMap) {
        self.init(name: map.name, flags: ForwardMapFormat.flags, keyType: ForwardMapFormat.keyType,
                  keyLength: ForwardMapFormat.keyLength, dataType: ForwardMapFormat.dataType,
                  dataLength: ForwardMapFormat.dataLength, entries: map.entries.sorted { $0.publicPort < $1.publicPort })
    }

    /// Readable differences between the maps committed and those the kernel reports.
    static func differences(expected: [NftMapState], actual: [NftMapState]) -> [String] {
        var differences: [String] = []
        let actualByName = Dictionary(actual.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for map in expected {
            let name = abbreviated(map.name)
            guard let found = actualByName[map.name] else {
                differences.append("map \(name) is missing")
                continue
            }
            func check(_ what: String, _ want: UInt32?, _ have: UInt32?) {
                if want != have {
                    differences.append("map \(name): \(what) is \(have.map { "\($0)" } ?? "unset"), expected \(want.map { "\($0)" } ?? "unset")")
                }
            }
            check("flags", map.flags, found.flags)
            check("key type", map.keyType, found.keyType)
            check("key length", map.keyLength, found.keyLength)
            check("data type", map.dataType, found.dataType)
            check("data length", map.dataLength, found.dataLength)
            if found.malformedElements > 0 {
                differences.append("map \(name): \(found.malformedElements) elements of an unexpected size")
            }
            if found.entries.count != map.entries.count {
                differences.append("map \(name): \(found.entries.count) elements, expected \(map.entries.count)")
            }
            if found.entries != map.entries {
                // Name a few, not ten thousand.
                let want = Set(map.entries), have = Set(found.entries)
                let missing = map.entries.filter { !have.contains($0) }
                let extra = found.entries.filter { !want.contains($0) }
                if !missing.isEmpty {
                    differences.append("map \(name): \(missing.count) elements missing, e.g. " + missing.prefix(3).map(\.nftText).joined(separator: ", "))
                }
                if !extra.isEmpty {
                    differences.append("map \(name): \(extra.count) unexpected elements, e.g. " + extra.prefix(3).map(\.nftText).joined(separator: ", "))
                }
            }
        }
        let expectedNames = Set(expected.map(\.name))
        for map in actual where !expectedNames.contains(map.name) {
            differences.append("unexpected map \(abbreviated(map.name))")
        }
        return differences
    }
}

extension ForwardMap.Entry {
    /// As nft writes an element: `8080 : 10.0.0.2 . 80`.
    var nftText: String { "\(publicPort) : \(target) . \(targetPort)" }
}

/// A chain as committed or as read back: enough to tell whether the kernel holds what was sent.
struct NftChainState: Equatable {
    var name: String
    var type: String?
    var hook: UInt32?
    var priority: Int32?
    var policy: UInt32?
    /// Expression names of each rule, in order.
    var rules: [[String]]
    /// The full expressions (expected state only), to build the rules from.
    var expressions: [[NftExpr]] = []

    init(name: String, type: String?, hook: UInt32?, priority: Int32?, policy: UInt32?, rules: [[String]]) {
        self.name = name
        self.type = type
        self.hook = hook
        self.priority = priority
        self.policy = policy
        self.rules = rules
    }

    init(_ chain: Chain, rules expressions: [[NftExpr]]) {
        self.init(name: chain.name, type: chain.kind.rawValue, hook: chain.hook.hookNumber, priority: chain.priority,
                  policy: chain.policy.verdictCode, rules: expressions.map { $0.map(\.name) })
        self.expressions = expressions
    }

    /// Readable differences between what was committed and what the kernel reports.
    static func differences(expected: [NftChainState], actual: [NftChainState]) -> [String] {
        var differences: [String] = []
        let actualByName = Dictionary(actual.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let expectedNames = Set(expected.map(\.name))
        for chain in expected {
            guard let found = actualByName[chain.name] else {
                differences.append("chain \(chain.name) is missing")
                continue
            }
            func check<T: Equatable>(_ what: String, _ want: T?, _ have: T?) {
                if want != have {
                    differences.append("chain \(chain.name): \(what) is \(have.map { "\($0)" } ?? "unset"), expected \(want.map { "\($0)" } ?? "unset")")
                }
            }
            check("type", chain.type, found.type)
            check("hook", chain.hook, found.hook)
            check("priority", chain.priority, found.priority)
            check("policy", chain.policy, found.policy)
            if chain.rules.count != found.rules.count {
                differences.append("chain \(chain.name): \(found.rules.count) rules, expected \(chain.rules.count)")
            } else {
                for (index, (want, have)) in zip(chain.rules, found.rules).enumerated() where want != have {
                    differences.append("chain \(chain.name) rule \(index + 1): expressions \(have), expected \(want)")
                }
            }
        }
        for chain in actual where !expectedNames.contains(chain.name) {
            differences.append("unexpected chain \(chain.name)")
        }
        return differences
    }

    static func == (lhs: NftChainState, rhs: NftChainState) -> Bool {
        lhs.name == rhs.name && lhs.type == rhs.type && lhs.hook == rhs.hook && lhs.priority == rhs.priority
            && lhs.policy == rhs.policy && lhs.rules == rhs.rules
    }
}

/// A name short enough for a log line (a rejected name may be hundreds of characters long).
private func abbreviated(_ name: String) -> String {
    name.count <= 64 ? name : "\(name.prefix(60))… (\(name.utf8.count) bytes)"
}

/// NFT_MSG_* values import as a struct (a named C enum); the batch API wants the raw value.
@inline(__always) private func msg(_ type: nf_tables_msg_types) -> UInt32 { type.rawValue }
