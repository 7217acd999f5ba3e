import CMnl
import Glibc
import StateMachine

/// The WireGuard link over rtnetlink: whether the kernel has the `wireguard` link type, and the
/// link's MTU. Addresses and IFF_UP go through `AddressConfigurator` like any link's.
///
/// Data planes: where the kernel has the link type, the kernel could carry the tunnel, configured
/// over generic netlink (WG_CMD_SET_DEVICE); vpnsup does not drive that plane yet (no machine
/// here has the module, so it could not be tested), and runs wireguard-go on every kernel. The
/// probe tells the two apart for the status and for the day the kernel plane is added.
public enum WireGuardLink {
    /// Whether this kernel can create a `wireguard` link: RTM_NEWLINK of that kind named `name`,
    /// deleted again at once. False when the kernel answers EOPNOTSUPP (no such link type, and no
    /// module it could load). Throws for anything else (EEXIST: a link of that name exists).
    public static func kernelSupportsWireGuard(probingWith name: String) throws -> Bool {
        do {
            try createLink(name, kind: "wireguard")
        } catch let error as NetlinkError where error.errno == EOPNOTSUPP {
            return false
        }
        try deleteLink(name)
        return true
    }

    /// RTM_NEWLINK (create, exclusive) of a link of `kind` with no kind-specific data.
    static func createLink(_ name: String, kind: String) throws {
        let operation = "create link \(name) of kind \(kind)"
        guard !name.isEmpty, name.utf8.count < Int(IFNAMSIZ) else { throw NetlinkError(operation: operation, errno: EINVAL) }
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: []) { header in
            header.pointee.nlmsg_type = UInt16(RTM_NEWLINK)
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<ifinfomsg>.size)!
                .assumingMemoryBound(to: ifinfomsg.self)
            message.pointee.ifi_family = UInt8(AF_UNSPEC)
            mnl_attr_put_strz(header, UInt16(IFLA_IFNAME), name)
            let info = mnl_attr_nest_start(header, UInt16(IFLA_LINKINFO))
            mnl_attr_put_strz(header, UInt16(IFLA_INFO_KIND), kind)
            mnl_attr_nest_end(header, info)
        }
    }

    /// RTM_DELLINK by name. A link that is already gone counts as deleted.
    public static func deleteLink(_ name: String) throws {
        let operation = "delete link \(name)"
        guard !name.isEmpty, name.utf8.count < Int(IFNAMSIZ) else { throw NetlinkError(operation: operation, errno: EINVAL) }
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: [ENODEV]) { header in
            header.pointee.nlmsg_type = UInt16(RTM_DELLINK)
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK)
            let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<ifinfomsg>.size)!
                .assumingMemoryBound(to: ifinfomsg.self)
            message.pointee.ifi_family = UInt8(AF_UNSPEC)
            mnl_attr_put_strz(header, UInt16(IFLA_IFNAME), name)
        }
    }

    /// RTM_NEWLINK with IFLA_MTU on an existing link (wireguard-go creates its TUN with 1420 and
    /// follows the link's MTU when it changes).
    public static func setMTU(_ mtu: Int, on name: String) throws {
        let operation = "set the MTU of \(name) to \(mtu)"
        guard !name.isEmpty, name.utf8.count < Int(IFNAMSIZ), let value = UInt32(exactly: mtu), value > 0 else {
            throw NetlinkError(operation: operation, errno: EINVAL)
        }
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: []) { header in
            header.pointee.nlmsg_type = UInt16(RTM_NEWLINK)
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK)
            let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<ifinfomsg>.size)!
                .assumingMemoryBound(to: ifinfomsg.self)
            message.pointee.ifi_family = UInt8(AF_UNSPEC)
            mnl_attr_put_strz(header, UInt16(IFLA_IFNAME), name)
            mnl_attr_put_u32(header, UInt16(IFLA_MTU), value)
        }
    }
}
