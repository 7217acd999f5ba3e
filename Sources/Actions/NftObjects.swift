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

/// A named set of the table: a map definition (NFT_MSG_NEWSET), a batch of its elements
/// (NFT_MSG_NEWSETELEM), or an empty set to parse a dump into.
final class NftSet {
    let pointer: OpaquePointer

    init() throws(FirewallError) {
        guard let set = nftnl_set_alloc() else { throw FirewallError.outOfMemory("nftnl_set_alloc") }
        pointer = set
    }

    /// Just the identity of `name` in `table`: enough for a dump filter or an element message.
    /// `id` is the set's number within the batch (0: none), which rules and elements sent in the
    /// same batch may refer to.
    convenience init(name: String, table: String, id: UInt32 = 0) throws(FirewallError) {
        try self.init()
        nftnl_set_set_str(pointer, nftAttr(NFTNL_SET_TABLE), table)
        nftnl_set_set_str(pointer, nftAttr(NFTNL_SET_NAME), name)
        nftnl_set_set_u32(pointer, nftAttr(NFTNL_SET_FAMILY), UInt32(NFPROTO_INET))
        if id != 0 { nftnl_set_set_u32(pointer, nftAttr(NFTNL_SET_ID), id) }
    }

    /// The definition of `map`, attribute for attribute what nft sends for
    /// `map NAME { type inet_service : ipv4_addr . inet_service }`.
    convenience init(definitionOf map: ForwardMap, table: String, id: UInt32) throws(FirewallError) {
        try self.init(name: map.name, table: table, id: id)
        nftnl_set_set_u32(pointer, nftAttr(NFTNL_SET_FLAGS), ForwardMapFormat.flags)
        nftnl_set_set_u32(pointer, nftAttr(NFTNL_SET_KEY_TYPE), ForwardMapFormat.keyType)
        nftnl_set_set_u32(pointer, nftAttr(NFTNL_SET_KEY_LEN), ForwardMapFormat.keyLength)
        nftnl_set_set_u32(pointer, nftAttr(NFTNL_SET_DATA_TYPE), ForwardMapFormat.dataType)
        nftnl_set_set_u32(pointer, nftAttr(NFTNL_SET_DATA_LEN), ForwardMapFormat.dataLength)
        ForwardMapFormat.userData.withUnsafeBytes {
            _ = nftnl_set_set_data(pointer, nftAttr(NFTNL_SET_USERDATA), $0.baseAddress, UInt32($0.count))
        }
    }

    /// `entries` of `map` as elements (the set then owns them), for one NFT_MSG_NEWSETELEM message.
    convenience init(elements entries: ArraySlice<ForwardMap.Entry>, of map: ForwardMap, table: String, id: UInt32) throws(FirewallError) {
        try self.init(name: map.name, table: table, id: id)
        for entry in entries {
            guard let element = nftnl_set_elem_alloc() else { throw FirewallError.outOfMemory("nftnl_set_elem_alloc") }
            let key = entry.nftKey, data = entry.nftData
            key.withUnsafeBytes { _ = nftnl_set_elem_set(element, nftAttr(NFTNL_SET_ELEM_KEY), $0.baseAddress, UInt32($0.count)) }
            data.withUnsafeBytes { _ = nftnl_set_elem_set(element, nftAttr(NFTNL_SET_ELEM_DATA), $0.baseAddress, UInt32($0.count)) }
            nftnl_set_elem_add(pointer, element)
        }
    }

    deinit { nftnl_set_free(pointer) }

    func string(_ attribute: nftnl_set_attr) -> String? {
        guard nftnl_set_is_set(pointer, nftAttr(attribute)),
              let text = nftnl_set_get_str(pointer, nftAttr(attribute)) else { return nil }
        return String(cString: text)
    }

    func u32(_ attribute: nftnl_set_attr) -> UInt32? {
        nftnl_set_is_set(pointer, nftAttr(attribute)) ? nftnl_set_get_u32(pointer, nftAttr(attribute)) : nil
    }

    /// Calls `body` with the key and data bytes of each element; the bytes are copies.
    func forEachElement(_ body: ([UInt8], [UInt8]) -> Void) throws(FirewallError) {
        guard let iterator = nftnl_set_elems_iter_create(pointer) else { throw FirewallError.outOfMemory("nftnl_set_elems_iter_create") }
        defer { nftnl_set_elems_iter_destroy(iterator) }
        // iter_next returns the current element and then advances (NULL at the end).
        while let element = nftnl_set_elems_iter_next(iterator) {
            body(bytes(of: element, nftAttr(NFTNL_SET_ELEM_KEY)), bytes(of: element, nftAttr(NFTNL_SET_ELEM_DATA)))
        }
    }

    private func bytes(of element: OpaquePointer, _ attribute: UInt16) -> [UInt8] {
        guard nftnl_set_elem_is_set(element, attribute) else { return [] }
        var length: UInt32 = 0
        guard let data = nftnl_set_elem_get(element, attribute, &length) else { return [] }
        return Array(UnsafeRawBufferPointer(start: data, count: Int(length)))
    }
}

/// How a `ForwardMap` is laid out in the kernel, as nft 1.0.6 lays out
/// `type inet_service : ipv4_addr . inet_service`.
enum ForwardMapFormat {
    static let flags = UInt32(NFT_SET_MAP.rawValue)
    /// nft's datatype numbers: TYPE_IPADDR = 7, TYPE_INET_SERVICE = 13; a concatenation packs
    /// them 6 bits apart, first component highest: (7 << 6) | 13 = 461.
    static let keyType: UInt32 = 13
    static let keyLength: UInt32 = 2
    static let dataType: UInt32 = 7 << 6 | 13
    /// Each component of a concatenation fills whole 32-bit registers: 4 (address) + 4 (2-byte port, padded).
    static let dataLength: UInt32 = 8
    /// nft's user data for this map type (libnftnl udata TLVs: type, length, value), copied from
    /// `nft --debug=mnl`: key byte order big-endian (2), data byte order unspecified (0), data
    /// "typeof" = a concatenation (expression type 13) with no sub-expressions, data not an
    /// interval. nft reads it back to print the map as declared; without it the listing differs.
    static let userData: [UInt8] = [
        0x00, 0x04, 0x02, 0x00, 0x00, 0x00,
        0x01, 0x04, 0x00, 0x00, 0x00, 0x00,
        0x04, 0x08, 0x00, 0x04, 0x0d, 0x00, 0x00, 0x00, 0x01, 0x00,
        0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
    ]
    /// Bytes one element takes in a NEWSETELEM message: element nest (4) + key nest (4) with a
    /// 2-byte value padded to 8 + data nest (4) with an 8-byte value (12).
    static let elementBytes = 4 + 4 + 8 + 4 + 12
    /// Elements per NEWSETELEM message. The element list is one nested attribute whose length
    /// is 16 bits, so a message must stay under 64 KiB: 60 KiB of elements leaves room for the
    /// header and names. (libnftnl also numbers each element's attribute 1, 2, ... and attribute
    /// types have 14 bits: another limit, at 16383, that this stays far below.)
    static let elementsPerMessage = 60 * 1024 / elementBytes
}

extension ForwardMap.Entry {
    /// The public port, in network order.
    var nftKey: [UInt8] { NftTranslator.bigEndian(publicPort) }
    /// Target address, then the target port in network order padded to a 32-bit register.
    var nftData: [UInt8] { target.octets + NftTranslator.bigEndian(targetPort) + [0, 0] }

    /// An entry read back from the kernel, or nil if its bytes are not in `ForwardMapFormat`.
    init?(nftKey key: [UInt8], data: [UInt8]) {
        guard key.count == Int(ForwardMapFormat.keyLength), data.count == Int(ForwardMapFormat.dataLength) else { return nil }
        self.init(publicPort: UInt16(key[0]) << 8 | UInt16(key[1]),
                  target: IPv4Address(data[0], data[1], data[2], data[3]),
                  targetPort: UInt16(data[4]) << 8 | UInt16(data[5]))
    }
}
