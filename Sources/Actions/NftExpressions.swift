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

    enum CtKey: String, Hashable, Sendable {
        case state, status

        var key: UInt32 { self == .state ? NFT_CT_STATE.rawValue : NFT_CT_STATUS.rawValue }
    }

    /// Loads go to register 1 (nft's choice for a single-selector match); a map lookup fills
    /// registers 1 and 9 (the address, then the port in the next 32-bit register).
    case meta(MetaKey)
    case ct(CtKey)
    case payload(PayloadBase, offset: UInt32, length: UInt32)
    case bitwise(mask: [UInt8], xor: [UInt8])
    case cmp(CmpOp, [UInt8])
    case counter
    case verdict(Verdict)
    case masquerade
    /// `immediate` data (not a verdict) into register 1.
    case immediate([UInt8])
    /// `dnat ip to ...`: the address from register 1, the port (if any) from 32-bit register 9.
    case destinationNAT(withPort: Bool)
    /// Looks register 1 up in map `set` (referenced by name and by its ID within the batch) and
    /// loads the value into register 1 onwards.
    case lookup(set: String, id: UInt32)
    /// `rt mtu` in a TCP-option context: the path MTU as an MSS.
    case routeTCPMSS
    /// Host to network byte order of a 2-byte value in register 1.
    case hostToNetwork16
    /// Writes register 1 into TCP option `type` at `offset` for `length` bytes.
    case writeTCPOption(type: UInt8, offset: UInt32, length: UInt32)

    /// The libnftnl expression name; the kernel reports the same names back.
    var name: String {
        switch self {
        case .meta: "meta"
        case .ct: "ct"
        case .payload: "payload"
        case .bitwise: "bitwise"
        case .cmp: "cmp"
        case .counter: "counter"
        case .verdict, .immediate: "immediate"
        case .masquerade: "masq"
        case .destinationNAT: "nat"
        case .lookup: "lookup"
        case .routeTCPMSS: "rt"
        case .hostToNetwork16: "byteorder"
        case .writeTCPOption: "exthdr"
        }
    }

    var description: String {
        switch self {
        case .meta(let key): "[ meta load \(key.rawValue) => reg 1 ]"
        case .ct(let key): "[ ct load \(key.rawValue) => reg 1 ]"
        case .payload(let base, let offset, let length):
            "[ payload load \(length)b @ \(base.rawValue) + \(offset) => reg 1 ]"
        case .bitwise(let mask, let xor):
            "[ bitwise reg 1 = ( reg 1 & \(NftExpr.registerText(mask)) ) ^ \(NftExpr.registerText(xor)) ]"
        case .cmp(let op, let data): "[ cmp \(op.rawValue) reg 1 \(NftExpr.registerText(data)) ]"
        case .counter: "[ counter pkts 0 bytes 0 ]"
        case .verdict(let verdict): "[ immediate reg 0 \(verdict.rawValue) ]"
        case .masquerade: "[ masq ]"
        case .immediate(let data): "[ immediate reg 1 \(NftExpr.registerText(data)) ]"
        case .destinationNAT(let withPort):
            "[ nat dnat ip addr_min reg 1" + (withPort ? " proto_min reg \(NFT_REG32_01.rawValue)" : "") + " ]"
        case .lookup(let set, _): "[ lookup reg 1 set \(set) dreg 1 ]"
        case .routeTCPMSS: "[ rt load tcpmss => reg 1 ]"
        case .hostToNetwork16: "[ byteorder reg 1 = hton(reg 1, 2, 2) ]"
        case .writeTCPOption(let type, let offset, let length):
            "[ exthdr write tcpopt reg 1 => \(length)b @ \(type) + \(offset) ]"
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
    /// with the dependency nft adds (once per rule), then `counter`, then the action with its own
    /// dependency. `maps` gives the batch-local ID of each map a rule may look up.
    static func expressions(for rule: Rule, maps: [String: UInt32] = [:]) throws(NftTranslationError) -> [NftExpr] {
        var exprs: [NftExpr] = []
        // nft emits an implicit dependency only if the rule has not already established it, and
        // refuses a rule whose dependencies contradict each other ("conflicting protocols").
        var knownFamily: Match.Family?
        var knownL4Proto: UInt8?

        func requireIPv4() throws(NftTranslationError) {
            switch knownFamily {
            case .ipv4: return
            case .ipv6: throw NftTranslationError(description: "conflicting protocols (ipv6 vs. ipv4) in rule: \(rule.nftText)")
            case nil:
                exprs += [.meta(.nfproto), .cmp(.eq, [UInt8(NFPROTO_IPV4)])]
                knownFamily = .ipv4
            }
        }

        func requireL4Proto(_ proto: UInt8) throws(NftTranslationError) {
            if knownL4Proto == proto { return }
            guard knownL4Proto == nil else {
                throw NftTranslationError(description: "conflicting protocols (\(knownL4Proto!) vs. \(proto)) in rule: \(rule.nftText)")
            }
            if proto == UInt8(IPPROTO_ICMPV6) && knownFamily == nil {
                // icmpv6 needs IPv6 underneath; nft checks it only when nothing in the rule has
                // settled the network protocol yet (after `ip daddr` it adds just l4proto).
                exprs += [.meta(.nfproto), .cmp(.eq, [UInt8(NFPROTO_IPV6)])]
                knownFamily = .ipv6
            }
            exprs += [.meta(.l4proto), .cmp(.eq, [proto])]
            knownL4Proto = proto
        }

        for match in rule.matches {
            switch match {
            case .inputInterface(let name):
                exprs += [.meta(.iifname), .cmp(.eq, try interfaceName(name))]
            case .outputInterface(let name):
                exprs += [.meta(.oifname), .cmp(.eq, try interfaceName(name))]
            case .connectionState(let states):
                exprs += [.ct(.state), .bitwise(mask: hostOrder(states.rawValue), xor: hostOrder(UInt32(0))),
                          .cmp(.neq, hostOrder(UInt32(0)))]
            case .family(let family):
                let proto = family == .ipv4 ? NFPROTO_IPV4 : NFPROTO_IPV6
                exprs += [.meta(.nfproto), .cmp(.eq, [UInt8(proto)])]
                if knownFamily == nil { knownFamily = family }
            case .sourceNetwork(let network):
                try requireIPv4()
                exprs += Self.networkMatch(network, offset: 12)
            case .destinationNetwork(let network):
                try requireIPv4()
                exprs += Self.networkMatch(network, offset: 16)
            case .destinationAddress(let address):
                try requireIPv4()
                exprs += [.payload(.network, offset: 16, length: 4), .cmp(.eq, address.octets)]
            case .notDestinationAddress(let address):
                try requireIPv4()
                exprs += [.payload(.network, offset: 16, length: 4), .cmp(.neq, address.octets)]
            case .protocolICMP:
                // `meta l4proto icmp` rather than `ip protocol icmp`: both list back as written,
                // this one is a single load and is what `Match.nftText` prints.
                exprs += [.meta(.l4proto), .cmp(.eq, [UInt8(IPPROTO_ICMP)])]
                knownL4Proto = UInt8(IPPROTO_ICMP)
            case .destinationPort(let transport, let port):
                try requireL4Proto(transport.ipProtocol)
                exprs += [.payload(.transport, offset: 2, length: 2), .cmp(.eq, bigEndian(port))]
            case .mark(let mark):
                exprs += [.meta(.mark), .cmp(.eq, hostOrder(mark))]
            case .neighbourDiscovery(let type):
                // The ICMPv6 type is the first byte of the transport header.
                try requireL4Proto(UInt8(IPPROTO_ICMPV6))
                exprs += [.payload(.transport, offset: 0, length: 1), .cmp(.eq, [type.type])]
            case .destinationNATed:
                exprs += [.ct(.status), .bitwise(mask: hostOrder(UInt32(IPS_DST_NAT.rawValue)), xor: hostOrder(UInt32(0))),
                          .cmp(.neq, hostOrder(UInt32(0)))]
            case .tcpSYN:
                // nft 1.0.6 reads `tcp flags syn` as "SYN is set", not "only SYN is set".
                try requireL4Proto(UInt8(IPPROTO_TCP))
                exprs += [.payload(.transport, offset: 13, length: 1), .bitwise(mask: [tcpFlagSYN], xor: [0]), .cmp(.neq, [0])]
            }
        }
        if rule.counted { exprs.append(.counter) }
        switch rule.action {
        case .accept: exprs.append(.verdict(.accept))
        case .drop: exprs.append(.verdict(.drop))
        case .masquerade: exprs.append(.masquerade)
        case .destinationNAT(let address):
            // No nfproto dependency: in an inet table the kernel applies an ip-family NAT to IPv4 only.
            exprs += [.immediate(address.octets), .destinationNAT(withPort: false)]
        case .destinationNATMap(let name, let transport):
            guard let id = maps[name] else {
                throw NftTranslationError(description: "rule refers to map @\(name), which the ruleset does not define: \(rule.nftText)")
            }
            // The key is the packet's destination port; the dependency comes after any counter, as nft puts it.
            try requireL4Proto(transport.ipProtocol)
            exprs += [.payload(.transport, offset: 2, length: 2), .lookup(set: name, id: id), .destinationNAT(withPort: true)]
        case .clampMSSToPathMTU:
            // nft adds no tcp dependency here: the kernel's exthdr skips packets that are not TCP.
            exprs += [.routeTCPMSS, .hostToNetwork16,
                      .writeTCPOption(type: tcpOptionMaxSeg, offset: 2, length: 2)]
        }
        return exprs
    }

    /// An IPv4 address field (offset 12: source, 16: destination) inside `network`.
    static func networkMatch(_ network: IPv4Network, offset: UInt32) -> [NftExpr] {
        let prefix = network.prefixLength
        if prefix > 0 && prefix % 8 == 0 {
            // Byte-aligned prefix: nft loads only the significant bytes and needs no mask.
            let length = prefix / 8
            return [.payload(.network, offset: offset, length: UInt32(length)),
                    .cmp(.eq, Array(network.address.octets.prefix(length)))]
        }
        return [.payload(.network, offset: offset, length: 4),
                .bitwise(mask: IPv4Address(network.mask).octets, xor: [0, 0, 0, 0]),
                .cmp(.eq, network.address.octets)]
    }

    /// TCP header byte 13 bit 1; the kernel header defining it does not import cleanly.
    static let tcpFlagSYN: UInt8 = 0x02
    /// TCPOPT_MAXSEG: the MSS value sits 2 bytes into the option, 2 bytes long.
    static let tcpOptionMaxSeg: UInt8 = 2

    /// IFNAMSIZ bytes, zero-padded: the kernel compares the whole 16-byte register.
    static func interfaceName(_ name: String) throws(NftTranslationError) -> [UInt8] {
        let bytes = Array(name.utf8)
        guard bytes.count < Int(IFNAMSIZ), !bytes.contains(0) else {
            throw NftTranslationError(description: "invalid interface name \"\(name)\" (at most \(IFNAMSIZ - 1) bytes, no NUL)")
        }
        return bytes + Array(repeating: 0, count: Int(IFNAMSIZ) - bytes.count)
    }

    static func hostOrder(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

    static func bigEndian(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }
}

extension TransportProtocol {
    var ipProtocol: UInt8 { UInt8(self == .udp ? IPPROTO_UDP : IPPROTO_TCP) }
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
        case .ct(let key):
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_CT_KEY), key.key)
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
        case .immediate(let data):
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_IMM_DREG), reg1)
            data.withUnsafeBytes { _ = nftnl_expr_set(expr, nftAttr(NFTNL_EXPR_IMM_DATA), $0.baseAddress, UInt32($0.count)) }
        case .destinationNAT(let withPort):
            // No flags: nft sends none, and the kernel infers "port given" from the register.
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_NAT_TYPE), NFT_NAT_DNAT.rawValue)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_NAT_FAMILY), UInt32(NFPROTO_IPV4))
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_NAT_REG_ADDR_MIN), reg1)
            if withPort { nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_NAT_REG_PROTO_MIN), NFT_REG32_01.rawValue) }
        case .lookup(let set, let id):
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_LOOKUP_SREG), reg1)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_LOOKUP_DREG), reg1)
            nftnl_expr_set_str(expr, nftAttr(NFTNL_EXPR_LOOKUP_SET), set)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_LOOKUP_SET_ID), id)
        case .routeTCPMSS:
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_RT_KEY), NFT_RT_TCPMSS.rawValue)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_RT_DREG), reg1)
        case .hostToNetwork16:
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_BYTEORDER_SREG), reg1)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_BYTEORDER_DREG), reg1)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_BYTEORDER_OP), NFT_BYTEORDER_HTON.rawValue)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_BYTEORDER_LEN), 2)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_BYTEORDER_SIZE), 2)
        case .writeTCPOption(let type, let offset, let length):
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_EXTHDR_SREG), reg1)
            nftnl_expr_set_u8(expr, nftAttr(NFTNL_EXPR_EXTHDR_TYPE), type)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_EXTHDR_OFFSET), offset)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_EXTHDR_LEN), length)
            nftnl_expr_set_u32(expr, nftAttr(NFTNL_EXPR_EXTHDR_OP), NFT_EXTHDR_OP_TCPOPT.rawValue)
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
