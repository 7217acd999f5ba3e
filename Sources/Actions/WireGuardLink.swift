import CNetlink
import Glibc
import SystemSupport

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
    public static func kernelSupportsWireGuard(probingWith name: String) throws(SystemError) -> Bool {
        do {
            try createLink(name, kind: "wireguard")
        } catch where error.errno == EOPNOTSUPP {
            return false
        }
        try deleteLink(name)
        return true
    }

    /// RTM_NEWLINK (create, exclusive) of a link of `kind` with no kind-specific data.
    static func createLink(_ name: String, kind: String) throws(SystemError) {
        let operation = "create link \(name) of kind \(kind)"
        var request = try namedLinkRequest(RTM_NEWLINK, name, flags: NLM_F_CREATE | NLM_F_EXCL, operation: operation)
        request.appendNested(UInt16(IFLA_LINKINFO)) { info in
            info.appendAttribute(UInt16(IFLA_INFO_KIND), string: kind)
        }
        try AddressConfigurator.requestSocket().transact(request, operation: operation)
    }

    /// RTM_DELLINK by name. A link that is already gone counts as deleted.
    public static func deleteLink(_ name: String) throws(SystemError) {
        let operation = "delete link \(name)"
        let request = try namedLinkRequest(RTM_DELLINK, name, operation: operation)
        try AddressConfigurator.requestSocket().transact(request, operation: operation, tolerating: [ENODEV])
    }

    /// RTM_NEWLINK with IFLA_MTU on an existing link (wireguard-go creates its TUN with 1420 and
    /// follows the link's MTU when it changes).
    public static func setMTU(_ mtu: Int, on name: String) throws(SystemError) {
        let operation = "set the MTU of \(name) to \(mtu)"
        guard let value = UInt32(exactly: mtu), value > 0 else { throw SystemError(operation: operation, errno: EINVAL) }
        var request = try namedLinkRequest(RTM_NEWLINK, name, operation: operation)
        request.appendAttribute(UInt16(IFLA_MTU), value)
        try AddressConfigurator.requestSocket().transact(request, operation: operation)
    }

    /// An acknowledged RTM_*LINK request naming its link by IFLA_IFNAME.
    private static func namedLinkRequest(_ type: Int, _ name: String, flags: Int32 = 0,
                                         operation: String) throws(SystemError) -> NetlinkRequest {
        guard !name.isEmpty, name.utf8.count < Int(IFNAMSIZ) else { throw SystemError(operation: operation, errno: EINVAL) }
        var request = NetlinkRequest.link(type, flags: flags)
        request.appendAttribute(UInt16(IFLA_IFNAME), string: name)
        return request
    }
}
