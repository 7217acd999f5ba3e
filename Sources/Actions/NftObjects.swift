import CNftnl
import StateMachine

// Owners of libnftnl objects: each frees its object in deinit, so no C pointer outlives its owner
// or leaks on a thrown error. Used on one thread only (the Firewall's owner).

final class NftTable {
    let pointer: OpaquePointer

    init(name: String) throws(FirewallError) {
        guard let table = nftnl_table_alloc() else { throw FirewallError.outOfMemory("nftnl_table_alloc") }
        pointer = table
        nftnl_table_set_str(table, nftAttr(NFTNL_TABLE_NAME), name)
        nftnl_table_set_u32(table, nftAttr(NFTNL_TABLE_FAMILY), UInt32(NFPROTO_INET))
        // nft sends flags 0 on `add table`; doing the same keeps the messages identical.
        nftnl_table_set_u32(table, nftAttr(NFTNL_TABLE_FLAGS), 0)
    }

    deinit { nftnl_table_free(pointer) }
}

final class NftChain {
    let pointer: OpaquePointer

    /// An empty chain, to parse a dumped message into (or to carry a dump filter).
    init() throws(FirewallError) {
        guard let chain = nftnl_chain_alloc() else { throw FirewallError.outOfMemory("nftnl_chain_alloc") }
        pointer = chain
    }

    /// A base chain of `table`, ready for NFT_MSG_NEWCHAIN.
    convenience init(_ chain: Chain, table: String) throws(FirewallError) {
        try self.init()
        nftnl_chain_set_str(pointer, nftAttr(NFTNL_CHAIN_TABLE), table)
        nftnl_chain_set_str(pointer, nftAttr(NFTNL_CHAIN_NAME), chain.name)
        nftnl_chain_set_u32(pointer, nftAttr(NFTNL_CHAIN_FAMILY), UInt32(NFPROTO_INET))
        nftnl_chain_set_str(pointer, nftAttr(NFTNL_CHAIN_TYPE), chain.kind.rawValue)
        nftnl_chain_set_u32(pointer, nftAttr(NFTNL_CHAIN_HOOKNUM), chain.hook.hookNumber)
        nftnl_chain_set_s32(pointer, nftAttr(NFTNL_CHAIN_PRIO), chain.priority)
        nftnl_chain_set_u32(pointer, nftAttr(NFTNL_CHAIN_POLICY), chain.policy.verdictCode)
    }

    deinit { nftnl_chain_free(pointer) }

    func string(_ attribute: nftnl_chain_attr) -> String? {
        guard nftnl_chain_is_set(pointer, nftAttr(attribute)),
              let text = nftnl_chain_get_str(pointer, nftAttr(attribute)) else { return nil }
        return String(cString: text)
    }

    func u32(_ attribute: nftnl_chain_attr) -> UInt32? {
        nftnl_chain_is_set(pointer, nftAttr(attribute)) ? nftnl_chain_get_u32(pointer, nftAttr(attribute)) : nil
    }

    func s32(_ attribute: nftnl_chain_attr) -> Int32? {
        nftnl_chain_is_set(pointer, nftAttr(attribute)) ? nftnl_chain_get_s32(pointer, nftAttr(attribute)) : nil
    }
}

final class NftRule {
    let pointer: OpaquePointer

    init() throws(FirewallError) {
        guard let rule = nftnl_rule_alloc() else { throw FirewallError.outOfMemory("nftnl_rule_alloc") }
        pointer = rule
    }

    /// A rule appended to `chain` of `table`, with its expressions (which the rule then owns).
    convenience init(table: String, chain: String, expressions: [NftExpr]) throws(FirewallError) {
        try self.init()
        nftnl_rule_set_str(pointer, nftAttr(NFTNL_RULE_TABLE), table)
        nftnl_rule_set_str(pointer, nftAttr(NFTNL_RULE_CHAIN), chain)
        nftnl_rule_set_u32(pointer, nftAttr(NFTNL_RULE_FAMILY), UInt32(NFPROTO_INET))
        for expression in expressions {
            guard let expr = expression.makeNftnl() else { throw FirewallError.outOfMemory("nftnl_expr_alloc") }
            nftnl_rule_add_expr(pointer, expr)
        }
    }

    deinit { nftnl_rule_free(pointer) }

    func string(_ attribute: nftnl_rule_attr) -> String? {
        guard nftnl_rule_is_set(pointer, nftAttr(attribute)),
              let text = nftnl_rule_get_str(pointer, nftAttr(attribute)) else { return nil }
        return String(cString: text)
    }

    /// Calls `body` with each expression's name and pointer; the pointers stay owned by the rule.
    func forEachExpression(_ body: (String, OpaquePointer) -> Void) throws(FirewallError) {
        guard let iterator = nftnl_expr_iter_create(pointer) else { throw FirewallError.outOfMemory("nftnl_expr_iter_create") }
        defer { nftnl_expr_iter_destroy(iterator) }
        while let expr = nftnl_expr_iter_next(iterator) {
            let name = nftnl_expr_get_str(expr, nftAttr(NFTNL_EXPR_NAME)).map { String(cString: $0) } ?? ""
            body(name, expr)
        }
    }
}

extension Chain.Hook {
    var hookNumber: UInt32 {
        switch self {
        case .prerouting: UInt32(NF_INET_PRE_ROUTING.rawValue)
        case .input: UInt32(NF_INET_LOCAL_IN.rawValue)
        case .forward: UInt32(NF_INET_FORWARD.rawValue)
        case .output: UInt32(NF_INET_LOCAL_OUT.rawValue)
        case .postrouting: UInt32(NF_INET_POST_ROUTING.rawValue)
        }
    }
}

extension Chain.Policy {
    var verdictCode: UInt32 { UInt32(bitPattern: self == .accept ? NF_ACCEPT : NF_DROP) }
}
