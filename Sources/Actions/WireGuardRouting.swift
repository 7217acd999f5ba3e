import CNetlink
import Glibc
import SystemSupport

/// The router's own traffic over a WireGuard tunnel. OpenVPN's pushed routes (`redirect-gateway`)
/// send it into tun0 through the main table; wireguard-go installs no route at all, so vpnsup adds
/// what wg-quick does for `AllowedIPs = 0.0.0.0/0`, with vpnsup's own table (30320: the tunnel's
/// default route, else `unreachable`):
///
/// - `lookup main suppress_prefixlength 0`: the main table's routes except its default (the LAN,
///   the WAN subnet, what the administrator added), so the router still reaches its links;
/// - `not fwmark <transport mark> lookup 30320`: everything else the router sends goes into the
///   tunnel, or nowhere while it is down. Only marked packets (wireguard-go's transport, vpnsup's
///   resolver) fall through to the main table's default route, by the WAN.
///
/// Both come after `iif LAN_IF lookup 30320`, which keeps routing the LAN by vpnsup's table alone.
extension AddressConfigurator {
    /// RTM_NEWRULE (IPv4) `lookup main suppress_prefixlength 0 priority <priority>`. Idempotent (EEXIST).
    public func ensureMainTableWithoutDefault(priority: UInt32) throws(SystemError) {
        var request = Self.ruleRequest(flags: 0)
        request.appendAttribute(UInt16(FRA_PRIORITY), priority)
        request.appendAttribute(UInt16(FRA_TABLE), UInt32(RT_TABLE_MAIN.rawValue))
        request.appendAttribute(UInt16(FRA_SUPPRESS_PREFIXLEN), UInt32(0))
        try Self.requestSocket().transact(request, operation: "add rule lookup main suppress_prefixlength 0 priority \(priority)",
                                          tolerating: [EEXIST])
    }

    /// RTM_NEWRULE (IPv4) `not fwmark <mark> lookup <table> priority <priority>`. Idempotent (EEXIST).
    public func ensureUnmarkedRule(mark: UInt32, table: UInt32, priority: UInt32) throws(SystemError) {
        var request = Self.ruleRequest(flags: UInt32(FIB_RULE_INVERT))
        request.appendAttribute(UInt16(FRA_PRIORITY), priority)
        request.appendAttribute(UInt16(FRA_TABLE), table)
        request.appendAttribute(UInt16(FRA_FWMARK), mark)
        request.appendAttribute(UInt16(FRA_FWMASK), UInt32.max)
        try Self.requestSocket().transact(request, operation: "add rule not fwmark \(mark) lookup \(table) priority \(priority)",
                                          tolerating: [EEXIST])
    }

    private static func ruleRequest(flags: UInt32) -> NetlinkRequest {
        var request = NetlinkRequest(type: UInt16(RTM_NEWRULE), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL))
        var rule = fib_rule_hdr()
        rule.family = UInt8(AF_INET)
        rule.table = UInt8(RT_TABLE_UNSPEC.rawValue)  // the real id goes in FRA_TABLE
        rule.action = UInt8(FR_ACT_TO_TBL)
        rule.flags = flags
        request.append(rule)
        return request
    }
}
