import CNetlink
import SystemSupport

/// What the nftables monitor reports.
public enum NftablesEvent: Sendable, Hashable {
    /// A transaction that vpnsup did not make changed the watched table.
    case changed(NftablesTransaction)
    /// Notifications were lost (the receive buffer overran): the table may have changed unseen,
    /// so whoever owns it should check it.
    case resync
}

/// One change to an object of the watched table, as the kernel announced it.
public struct NftablesChange: Sendable, Hashable, CustomStringConvertible {
    public enum Object: String, Sendable, Hashable, CaseIterable {
        case table, chain, rule, set, element, object, flowtable
    }

    public var object: Object
    /// NEW* (created, or for a table also updated, e.g. made dormant) rather than DEL*/DESTROY*.
    public var added: Bool
    /// A chain's own name, or the chain of a rule.
    public var chain: String?
    /// The name of a set (also for its elements), a stateful object or a flowtable.
    public var name: String?
    /// A rule's handle.
    public var handle: UInt64?

    public init(_ object: Object, added: Bool, chain: String? = nil, name: String? = nil, handle: UInt64? = nil) {
        self.object = object
        self.added = added
        self.chain = chain
        self.name = name
        self.handle = handle
    }

    public var description: String {
        var text = phrase(count: 1)
        if let handle { text += " (handle \(handle))" }
        return text
    }

    /// "rule deleted in chain forward", or with a count "3 rules deleted in chain forward".
    func phrase(count: Int) -> String {
        let verb = added ? "added" : "deleted"
        let preposition = added ? "to" : "from"
        if count > 1 {
            switch object {
            case .table: return "table \(added ? "added or updated" : "deleted") \(count) times"
            case .rule: return "\(count) rules \(verb) \(added ? "to" : "in") chain \(chain ?? "?")"
            case .element: return "elements \(verb) \(preposition) set \(name ?? "?") (\(count) messages)"
            case .chain, .set, .object, .flowtable: return "\(count) \(object.rawValue)s \(verb)"
            }
        }
        switch object {
        case .table: return added ? "table added or updated" : "table deleted"
        case .chain: return "chain \(chain ?? "?") \(verb)"
        case .rule: return "rule \(verb) \(added ? "to" : "in") chain \(chain ?? "?")"
        case .element: return "elements \(verb) \(preposition) set \(name ?? "?")"
        case .set, .object, .flowtable: return "\(object.rawValue) \(name ?? "?") \(verb)"
        }
    }

    /// Changes that read the same when counted ("3 rules deleted in chain forward").
    fileprivate var groupKey: NftablesChange {
        var key = self
        key.handle = nil
        if object == .chain || object == .set || object == .object || object == .flowtable {
            key.chain = nil
            key.name = nil
        }
        return key
    }
}

/// The changes one outside transaction made to the watched table, and who made it.
public struct NftablesTransaction: Sendable, Hashable, CustomStringConvertible {
    /// "inet vpnsup".
    public var table: String
    public var changes: [NftablesChange]
    /// The netlink port of the socket that sent the transaction.
    public var portID: UInt32
    /// From the NEWGEN message that ends each transaction (absent if it never came).
    public var generation: UInt32?
    /// The task that committed it (NFTA_GEN_PROC_PID: a thread id, the pid of a single-threaded
    /// process such as nft), and its name.
    public var processID: UInt32?
    public var processName: String?

    public init(table: String, changes: [NftablesChange], portID: UInt32, generation: UInt32? = nil,
                processID: UInt32? = nil, processName: String? = nil) {
        self.table = table
        self.changes = changes
        self.portID = portID
        self.generation = generation
        self.processID = processID
        self.processName = processName
    }

    /// Who made the change: "nft (pid 4242)", "pid 4242" or "netlink port 4242".
    public var origin: String {
        switch (processName, processID) {
        case let (name?, pid?): "\(name) (pid \(pid))"
        case let (nil, pid?): "pid \(pid)"
        default: "netlink port \(portID)"
        }
    }

    /// E.g. "table inet vpnsup: rule deleted in chain forward (handle 7) by nft (pid 4242)", or
    /// for a flush (dozens of messages) "table deleted with 3 chains and 5 rules by ...". Runs of
    /// alike changes are counted, so the line stays short.
    public var description: String {
        "table \(table): \(summary) by \(origin)"
    }

    private var summary: String {
        // The table gone at the end of the transaction is what matters; its contents went with it.
        if let last = changes.last(where: { $0.object == .table }), !last.added {
            let counts = NftablesChange.Object.allCases.filter { $0 != .table }.compactMap { object -> String? in
                let count = changes.count { $0.object == object }
                guard count > 0 else { return nil }
                let noun = object == .element ? "element change" : object.rawValue
                return "\(count) \(noun)\(count == 1 ? "" : "s")"
            }
            guard let lastCount = counts.last else { return "table deleted" }
            let listed = counts.count == 1 ? lastCount : counts.dropLast().joined(separator: ", ") + " and " + lastCount
            return "table deleted with \(listed)"
        }
        var groups: [(change: NftablesChange, count: Int)] = []
        for change in changes {
            if let last = groups.last, last.change.groupKey == change.groupKey {
                groups[groups.count - 1].count += 1
            } else {
                groups.append((change, 1))
            }
        }
        let shown = 4
        var parts = groups.prefix(shown).map { $0.count == 1 ? $0.change.description : $0.change.phrase(count: $0.count) }
        if groups.count > shown {
            let rest = groups.dropFirst(shown).reduce(0) { $0 + $1.count }
            parts.append("\(rest) more change\(rest == 1 ? "" : "s")")
        }
        return parts.joined(separator: ", ")
    }
}

/// Turns buffers of nfnetlink messages from the NFNLGRP_NFTABLES group into reports about one
/// table. Pure: no I/O, no C calls (C headers give the constants only), every length checked.
///
/// The kernel announces each committed transaction as one message per object it touched, then
/// an NFT_MSG_NEWGEN naming the generation and the process; the decoder gathers the changes to
/// the watched table until that message, so one transaction (a flush is dozens of messages)
/// makes one report.
public struct NftablesDecoder {
    /// One decoded message.
    enum Item: Equatable {
        case change(NftablesChange, portID: UInt32)
        case generation(id: UInt32?, processID: UInt32?, processName: String?, portID: UInt32)
        case overrun
    }

    public let family: UInt8
    public let table: String
    /// Transactions from these ports are vpnsup's own and are never reported.
    public var ignoredPortIDs: Set<UInt32>
    /// How many messages of ignored ports reached the decoder (the kernel filter, when attached,
    /// drops them earlier; tests read this).
    private(set) var ignoredMessages = 0

    /// Changes of the transaction in progress, and its port.
    private var pending: [NftablesChange] = []
    private var pendingPortID: UInt32 = 0

    public init(table: String, family: UInt8 = UInt8(NFPROTO_INET), ignoring portIDs: Set<UInt32> = []) {
        self.table = table
        self.family = family
        ignoredPortIDs = portIDs
    }

    /// Whether changes are waiting for the message that ends their transaction.
    public var hasPending: Bool { !pending.isEmpty }

    /// Decodes every well-formed message in `bytes` and returns the completed reports.
    public mutating func decode(_ bytes: [UInt8]) -> [NftablesEvent] {
        var events: [NftablesEvent] = []
        for item in decodeItems(bytes) {
            switch item {
            case let .change(change, portID):
                if ignoredPortIDs.contains(portID) {
                    ignoredMessages += 1
                    continue
                }
                // Transactions are serialised; a change from another port means the last one's
                // end was lost. Report it rather than merge two.
                if !pending.isEmpty, portID != pendingPortID, let flushed = flush() { events.append(flushed) }
                pending.append(change)
                pendingPortID = portID
            case let .generation(id, processID, processName, portID):
                if ignoredPortIDs.contains(portID) { ignoredMessages += 1 }
                guard !pending.isEmpty else { continue }
                if portID != pendingPortID, let flushed = flush() {
                    events.append(flushed)
                    continue
                }
                events.append(.changed(NftablesTransaction(
                    table: tableLabel, changes: pending, portID: portID, generation: id,
                    processID: processID, processName: processName)))
                pending = []
            case .overrun:
                pending = []
                events.append(.resync)
            }
        }
        return events
    }

    /// Reports the changes still waiting for their transaction's end (which did not come).
    public mutating func flush() -> NftablesEvent? {
        guard !pending.isEmpty else { return nil }
        defer { pending = [] }
        return .changed(NftablesTransaction(table: tableLabel, changes: pending, portID: pendingPortID))
    }

    /// Forgets a partly seen transaction (its messages were lost; a resync covers it).
    public mutating func discardPending() { pending = [] }

    private var tableLabel: String { family == UInt8(NFPROTO_INET) ? "inet \(table)" : "\(family) \(table)" }

    // MARK: - Messages

    mutating func decodeItems(_ bytes: [UInt8]) -> [Item] {
        var items: [Item] = []
        for message in NetlinkMessages(bytes) {
            let header = message.header
            let body = message.body
            if header.type == UInt16(NLMSG_OVERRUN) {
                items.append(.overrun)
                continue
            }
            guard header.type >> 8 == UInt16(NFNL_SUBSYS_NFTABLES), body.count >= 4 else { continue }
            // struct nfgenmsg: family u8, version u8, res_id be16.
            let messageFamily = bytes[body.lowerBound]
            let attributes = NetlinkAttributes(bytes, body.lowerBound + 4 ..< body.upperBound)
            let message = UInt32(header.type & 0xff)
            if message == NFT_MSG_NEWGEN.rawValue {
                var id: UInt32?, pid: UInt32?, name: String?
                for attribute in attributes {
                    switch UInt32(attribute.type) {
                    case NFTA_GEN_ID.rawValue: id = bytes.bigEndian(UInt32.self, attribute.payload)
                    case NFTA_GEN_PROC_PID.rawValue: pid = bytes.bigEndian(UInt32.self, attribute.payload)
                    case NFTA_GEN_PROC_NAME.rawValue: name = bytes.cString(in: attribute.payload)
                    default: break
                    }
                }
                items.append(.generation(id: id, processID: pid, processName: name, portID: header.portID))
                continue
            }
            guard messageFamily == family, let (object, added) = Self.kind(of: message) else { continue }
            // Attribute 1 names the table in every object's message (NFTA_TABLE_NAME,
            // NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE,
            // NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE); the others differ per object.
            var tableName: String?
            var change = NftablesChange(object, added: added)
            for attribute in attributes {
                let type = UInt32(attribute.type)
                if type == 1 {
                    tableName = bytes.cString(in: attribute.payload)
                    continue
                }
                switch object {
                case .chain where type == NFTA_CHAIN_NAME.rawValue:
                    change.chain = bytes.cString(in: attribute.payload)
                case .rule where type == NFTA_RULE_CHAIN.rawValue:
                    change.chain = bytes.cString(in: attribute.payload)
                case .rule where type == NFTA_RULE_HANDLE.rawValue:
                    change.handle = bytes.bigEndian(UInt64.self, attribute.payload)
                case .set where type == NFTA_SET_NAME.rawValue,
                     .element where type == NFTA_SET_ELEM_LIST_SET.rawValue,
                     .object where type == NFTA_OBJ_NAME.rawValue,
                     .flowtable where type == NFTA_FLOWTABLE_NAME.rawValue:
                    change.name = bytes.cString(in: attribute.payload)
                default:
                    break
                }
            }
            guard tableName == table else { continue }
            items.append(.change(change, portID: header.portID))
        }
        return items
    }

    /// The object and direction of an NFT_MSG_* notification; nil for anything else.
    static func kind(of message: UInt32) -> (NftablesChange.Object, added: Bool)? {
        switch message {
        case NFT_MSG_NEWTABLE.rawValue: (.table, true)
        case NFT_MSG_DELTABLE.rawValue, Destroy.table: (.table, false)
        case NFT_MSG_NEWCHAIN.rawValue: (.chain, true)
        case NFT_MSG_DELCHAIN.rawValue, Destroy.chain: (.chain, false)
        case NFT_MSG_NEWRULE.rawValue: (.rule, true)
        case NFT_MSG_DELRULE.rawValue, Destroy.rule: (.rule, false)
        case NFT_MSG_NEWSET.rawValue: (.set, true)
        case NFT_MSG_DELSET.rawValue, Destroy.set: (.set, false)
        case NFT_MSG_NEWSETELEM.rawValue: (.element, true)
        case NFT_MSG_DELSETELEM.rawValue, Destroy.element: (.element, false)
        case NFT_MSG_NEWOBJ.rawValue: (.object, true)
        case NFT_MSG_DELOBJ.rawValue, Destroy.object: (.object, false)
        case NFT_MSG_NEWFLOWTABLE.rawValue: (.flowtable, true)
        case NFT_MSG_DELFLOWTABLE.rawValue, Destroy.flowtable: (.flowtable, false)
        default: nil
        }
    }

    /// NFT_MSG_DESTROY* (kernel 6.3+, "delete if it exists"): newer than Debian 12's headers, so
    /// spelled out; the numbers are kernel ABI.
    enum Destroy {
        static let table: UInt32 = 26
        static let chain: UInt32 = 27
        static let rule: UInt32 = 28
        static let set: UInt32 = 29
        static let element: UInt32 = 30
        static let object: UInt32 = 31
        static let flowtable: UInt32 = 32
    }

}
