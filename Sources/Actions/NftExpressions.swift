import CNftnl
import StateMachine

/// One nftables expression, as nft itself would generate it. Kept as a Swift value (not a libnftnl
/// object) so the translation of `Match`es can be checked without a kernel; `description` prints
/// it the way `nft --debug=netlink` does.
enum NftExpr: Hashable, Sendable, CustomStringConvertible {
    enum MetaKey: String, Hashable, Sendable {
        case iifname, oifname, nfproto, l4proto, mark

        var key: UInt32 {
            switch self {
            case .iifname: NFT_META_IIFNAME.rawValue
            case .oifname: NFT_META_OIFNAME.rawValue
            case .nfproto: NFT_META_NFPROTO.rawValue
            case .l4proto: NFT_META_L4PROTO.rawValue
            case .mark: NFT_META_MARK.rawValue
            }
        }
    }

    enum PayloadBase: String, Hashable, Sendable {
        case network = "network header", transport = "transport header"

        var base: UInt32 {
            switch self {
            case .network: NFT_PAYLOAD_NETWORK_HEADER.rawValue
            case .transport: NFT_PAYLOAD_TRANSPORT_HEADER.rawValue
            }
        }
    }

    enum CmpOp: String, Hashable, Sendable {
        case eq, neq

        var op: UInt32 { self == .eq ? NFT_CMP_EQ.rawValue : NFT_CMP_NEQ.rawValue }
    }

    enum Verdict: String, Hashable, Sendable {
        case accept, drop

        var code: UInt32 { UInt32(bitPattern: self == .accept ? NF_ACCEPT : NF_DROP) }
    }

    /// All loads go to register 1 (nft's choice for a single-selector match).
    case meta(MetaKey)
    case ctState
    case payload(PayloadBase, offset: UInt32, length: UInt32)
    case bitwise(mask: [UInt8], xor: [UInt8])
    case cmp(CmpOp, [UInt8])
    case counter
    case verdict(Verdict)
    case masquerade

    /// The libnftnl expression name; the kernel reports the same names back.
    var name: String {
        switch self {
        case .meta: "meta"
        case .ctState: "ct"
        case .payload: "payload"
        case .bitwise: "bitwise"
        case .cmp: "cmp"
        case .counter: "counter"
        case .verdict: "immediate"
        case .masquerade: "masq"
        }
    }

    var description: String {
        switch self {
        case .meta(let key): "[ meta load \(key.rawValue) => reg 1 ]"
        case .ctState: "[ ct load state => reg 1 ]"
        case .payload(let base, let offset, let length):
            "[ payload load \(length)b @ \(base.rawValue) + \(offset) => reg 1 ]"
        case .bitwise(let mask, let xor):
            "[ bitwise reg 1 = ( reg 1 & \(NftExpr.registerText(mask)) ) ^ \(NftExpr.registerText(xor)) ]"
        case .cmp(let op, let data): "[ cmp \(op.rawValue) reg 1 \(NftExpr.registerText(data)) ]"
        case .counter: "[ counter pkts 0 bytes 0 ]"
        case .verdict(let verdict): "[ immediate reg 0 \(verdict.rawValue) ]"
        case .masquerade: "[ masq ]"
        }
    }

    /// nft's debug format: 32-bit words read in host (little-endian) order, zero-padded.
    static func registerText(_ bytes: [UInt8]) -> String {
        stride(from: 0, to: max(bytes.count, 1), by: 4).map { start in
            var word: UInt32 = 0
            for index in start..<min(start + 4, bytes.count) {
                word |= UInt32(bytes[index]) << (8 * UInt32(index - start))
            }
            let digits = String(word, radix: 16)
            return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
        }.joined(separator: " ")
    }
}

/// Why a rule cannot be expressed at all (checked before anything reaches the kernel).
struct NftTranslationError: Error, CustomStringConvertible {
    var description: String
}

enum NftTranslator {
    /// The expressions of `rule`, in the order nft emits them for the rule's nft text: each match
    /// with the dependency nft adds (once per rule), then `counter`, then the verdict.
    static func expressions(for rule: Rule) throws(NftTranslationError) -> [NftExpr] {
        var exprs: [NftExpr] = []
        // nft emits an implicit dependency only if the rule has not already established it.
        var knownIPv4 = false
        var knownL4Proto: UInt8?

        func requireIPv4() {
            guard !knownIPv4 else { return }
            exprs += [.meta(.nfproto), .cmp(.eq, [UInt8(NFPROTO_IPV4)])]
            knownIPv4 = true
        }

        for match in rule.matches {
            switch match {
            case .inputInterface(let name):
                exprs += [.meta(.iifname), .cmp(.eq, try interfaceName(name))]
            case .outputInterface(let name):
                exprs += [.meta(.oifname), .cmp(.eq, try interfaceName(name))]
            case .connectionState(let states):
                exprs += [.ctState, .bitwise(mask: hostOrder(states.rawValue), xor: hostOrder(UInt32(0))),
                          .cmp(.neq, hostOrder(UInt32(0)))]
            case .family(let family):
                let proto = family == .ipv4 ? NFPROTO_IPV4 : NFPROTO_IPV6
                exprs += [.meta(.nfproto), .cmp(.eq, [UInt8(proto)])]
                if family == .ipv4 { knownIPv4 = true }
            case .sourceNetwork(let network):
                requireIPv4()
                let prefix = network.prefixLength
                if prefix > 0 && prefix % 8 == 0 {
                    // Byte-aligned prefix: nft loads only the significant bytes and needs no mask.
                    let length = prefix / 8
                    exprs += [.payload(.network, offset: 12, length: UInt32(length)),
                              .cmp(.eq, Array(network.address.octets.prefix(length)))]
                } else {
                    exprs += [.payload(.network, offset: 12, length: 4),
                              .bitwise(mask: IPv4Address(network.mask).octets, xor: [0, 0, 0, 0]),
                              .cmp(.eq, network.address.octets)]
                }
            case .destinationAddress(let address):
                requireIPv4()
                exprs += [.payload(.network, offset: 16, length: 4), .cmp(.eq, address.octets)]
            case .protocolICMP:
                // `meta l4proto icmp` rather than `ip protocol icmp`: both list back as written,
                // this one is a single load and is what `Match.nftText` prints.
                exprs += [.meta(.l4proto), .cmp(.eq, [UInt8(IPPROTO_ICMP)])]
                knownL4Proto = UInt8(IPPROTO_ICMP)
            case .destinationPort(let transport, let port):
                let proto = UInt8(transport == .udp ? IPPROTO_UDP : IPPROTO_TCP)
                if knownL4Proto != proto {
                    exprs += [.meta(.l4proto), .cmp(.eq, [proto])]
                    knownL4Proto = proto
                }
                exprs += [.payload(.transport, offset: 2, length: 2), .cmp(.eq, [UInt8(port >> 8), UInt8(port & 0xff)])]
            case .mark(let mark):
                exprs += [.meta(.mark), .cmp(.eq, hostOrder(mark))]
            case .notDestinationAddress, .neighbourDiscovery, .destinationNATed, .tcpSYN:
                throw NftTranslationError(description: "not translated yet: \(match.nftText)")
            }
        }
        if rule.counted { exprs.append(.counter) }
        switch rule.action {
        case .accept: exprs.append(.verdict(.accept))
        case .drop: exprs.append(.verdict(.drop))
        case .masquerade: exprs.append(.masquerade)
        case .destinationNAT, .destinationNATMap, .clampMSSToPathMTU:
            throw NftTranslationError(description: "not translated yet: \(rule.nftText)")
        }
        return exprs
    }

    /// IFNAMSIZ bytes, zero-padded: the kernel compares the whole 16-byte register.
    static func interfaceName(_ name: String) throws(NftTranslationError) -> [UInt8] {
        let bytes = Array(name.utf8)
        guard bytes.count < Int(IFNAMSIZ), !bytes.contains(0) else {
            throw NftTranslationError(description: "invalid interface name \"\(name)\" (at most \(IFNAMSIZ - 1) bytes, no NUL)")
        }
        return bytes + Array(repeating: 0, count: Int(IFNAMSIZ) - bytes.count)
    }

    static func hostOrder(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }
}

extension NftExpr {
    /// A new libnftnl expression; the caller hands it to a rule, which then owns it.
    func makeNftnl() -> OpaquePointer? {
        guard let expr = nftnl_expr_alloc(name) else { return nil }
        let reg1 = NFT_REG_1.rawValue
        switch self {
        case .meta(let key):
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_META_KEY), key.key)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_META_DREG), reg1)
        case .ctState:
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_CT_KEY), NFT_CT_STATE.rawValue)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_CT_DREG), reg1)
        case .payload(let base, let offset, let length):
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_PAYLOAD_DREG), reg1)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_PAYLOAD_BASE), base.base)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_PAYLOAD_OFFSET), offset)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_PAYLOAD_LEN), length)
        case .bitwise(let mask, let xor):
            // No NFTNL_EXPR_BITWISE_OP: nft omits it too, and the kernel defaults to mask-and-xor.
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_BITWISE_SREG), reg1)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_BITWISE_DREG), reg1)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_BITWISE_LEN), UInt32(mask.count))
            mask.withUnsafeBytes { _ = nftnl_expr_set(expr, nftAttr(NFTNL_EXPR_BITWISE_MASK), $0.baseAddress, UInt32($0.count)) }
            xor.withUnsafeBytes { _ = nftnl_expr_set(expr, nftAttr(NFTNL_EXPR_BITWISE_XOR), $0.baseAddress, UInt32($0.count)) }
        case .cmp(let op, let data):
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_CMP_SREG), reg1)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_CMP_OP), op.op)
            data.withUnsafeBytes { _ = nftnl_expr_set(expr, nftAttr(NFTNL_EXPR_CMP_DATA), $0.baseAddress, UInt32($0.count)) }
        case .counter, .masquerade:
            break // No attributes: what nft sends for a fresh `counter` and a plain `masquerade`.
        case .verdict(let verdict):
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_IMM_DREG), NFT_REG_VERDICT.rawValue)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_IMM_VERDICT), verdict.code)
        }
        return expr
    }
}

/// libnftnl's attribute enums import as Int (anonymous enums) or as structs (named ones); its
/// setters and getters take UInt16.
@inline(__always) func nftAttr(_ value: Int) -> UInt16 { UInt16(value) }
@inline(__always) func nftAttr<T: RawRepresentable>(_ value: T) -> UInt16 where T.RawValue: BinaryInteger {
    UInt16(value.rawValue)
}
