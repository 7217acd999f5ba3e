import CNftnl
import Glibc
import StateMachine
import SystemSupport

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
func abbreviated(_ name: String) -> String {
    name.count <= 64 ? name : "\(name.prefix(60))… (\(name.utf8.count) bytes)"
}
