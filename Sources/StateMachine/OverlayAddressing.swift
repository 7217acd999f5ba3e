/// Addresses on the Kubernetes overlay (docs/kubernetes.md), derived without any protocol: the
/// gateway holds an address in the lower half of the overlay network, and each client pod takes
/// the address in the upper half at its own pod IP's position within the cluster's pod networks.
/// Pod IPs are unique in a cluster at any moment, so derived addresses are too; the gateway can
/// invert the mapping (overlay address -> pod IP) without ever having heard from the client.
///
/// Example: pods in 10.244.0.0/16, gateway 172.30.0.1/15. Pod 10.244.3.7 is offset 0x0307 of
/// the pod network, so its overlay address is 172.31.3.7/15 (the upper half starts at 172.31.0.0).
public struct OverlayAddressing: Hashable, Sendable {
    /// The gateway's overlay address and the overlay's prefix length (the gateway's IP_ADDR).
    public let gateway: IPv4Interface
    /// The cluster's pod networks, in the order the offsets are counted.
    public let podNetworks: [IPv4Network]

    /// Why an overlay cannot be laid out, and which setting is to blame.
    public struct LayoutError: Error, Hashable, Sendable {
        public enum Setting: Hashable, Sendable { case gateway, podNetworks }
        public var setting: Setting
        public var problem: String
    }

    /// Checks that the gateway sits in the lower half and that the upper half holds every pod
    /// address (the last upper-half address is the overlay's broadcast: see `clientAddress`).
    public init(gateway: IPv4Interface, podNetworks: [IPv4Network]) throws(LayoutError) {
        guard !podNetworks.isEmpty else { throw LayoutError(setting: .podNetworks, problem: "lists no network") }
        guard gateway.prefixLength <= 30 else {
            throw LayoutError(setting: .gateway, problem: "has a prefix length above 30, which leaves no upper half for client pods")
        }
        let overlay = gateway.network
        if let pod = podNetworks.first(where: { $0.overlaps(overlay) }) {
            throw LayoutError(setting: .gateway, problem: "overlaps the pod network \(pod): the overlay must be a network of its own")
        }
        let half = UInt64(1) << UInt64(31 - gateway.prefixLength)
        guard UInt64(gateway.address.value - overlay.address.value) < half else {
            throw LayoutError(setting: .gateway, problem: "is in the upper half of \(overlay), which belongs to client pods: use an address below \(IPv4Address(overlay.address.value + UInt32(half)))")
        }
        let podAddresses = podNetworks.reduce(UInt64(0)) { $0 + $1.size }
        guard podAddresses <= half else {
            let needed = 32 - Self.bitsFor(podAddresses) - 1
            throw LayoutError(setting: .gateway, problem: "has room for \(half) client addresses in the upper half of \(overlay), fewer than the \(podAddresses) pod addresses: use a prefix length of \(needed) or less")
        }
        self.gateway = gateway
        self.podNetworks = podNetworks
    }

    public var overlayNetwork: IPv4Network { gateway.network }

    /// The first address of the upper half.
    private var clientBase: UInt32 { overlayNetwork.address.value + UInt32(1) << UInt32(31 - gateway.prefixLength) }

    /// The client address of the pod at `podAddress`, with the overlay's prefix length; nil when
    /// the pod address is outside every pod network, or is the one address that would land on
    /// the overlay's broadcast address (the very last of the pod networks, when they fill the half).
    public func clientAddress(forPod podAddress: IPv4Address) -> IPv4Interface? {
        var offset: UInt64 = 0
        for network in podNetworks {
            if network.contains(podAddress) {
                let address = UInt64(clientBase) + offset + UInt64(podAddress.value - network.address.value)
                let broadcast = UInt64(overlayNetwork.address.value) | UInt64(~overlayNetwork.mask)
                guard address < broadcast else { return nil }
                return IPv4Interface(address: IPv4Address(UInt32(address)), prefixLength: gateway.prefixLength)
            }
            offset += network.size
        }
        return nil
    }

    /// The pod IP behind a client's overlay address: the inverse of `clientAddress`.
    public func podAddress(forClient overlayAddress: IPv4Address) -> IPv4Address? {
        guard overlayNetwork.contains(overlayAddress), overlayAddress.value >= clientBase else { return nil }
        var offset = UInt64(overlayAddress.value - clientBase)
        for network in podNetworks {
            if offset < network.size { return IPv4Address(network.address.value + UInt32(offset)) }
            offset -= network.size
        }
        return nil
    }

    /// A locally administered unicast MAC address for an overlay address (02:76 — "v" — then
    /// the four octets), so that a link's MAC can be known from its overlay address alone.
    public static func macAddress(for overlayAddress: IPv4Address) -> [UInt8] {
        [0x02, 0x76] + overlayAddress.octets
    }

    /// The smallest b with 2^b >= count.
    private static func bitsFor(_ count: UInt64) -> Int {
        var bits = 0
        while UInt64(1) << UInt64(bits) < count { bits += 1 }
        return bits
    }
}

extension IPv4Network {
    /// How many addresses the network spans.
    public var size: UInt64 { UInt64(1) << UInt64(32 - prefixLength) }

    /// Whether the two networks share any address (one contains the other).
    public func overlaps(_ other: IPv4Network) -> Bool {
        let shorter = min(prefixLength, other.prefixLength)
        let mask = IPv4Network.mask(shorter)
        return address.value & mask == other.address.value & mask
    }
}
