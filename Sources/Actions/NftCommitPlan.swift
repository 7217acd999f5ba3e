import CNftnl
import Glibc
import StateMachine
import SystemSupport

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
