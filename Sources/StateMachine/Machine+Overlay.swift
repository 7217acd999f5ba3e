// The Kubernetes gateway (docs/kubernetes.md): with POD_CIDRS set, LAN_IF is a vxlan link over
// WAN_IF that vpnsup creates and owns. It is created in Init under the lockdown, before its
// address; created again when it goes (a netlink event, repaired like the LAN address); and the
// pod networks are routed by the WAN's next hop, above the tunnel's redirect of the default route.
extension Machine {
    /// The overlay of the configuration in use, if it has one.
    var overlay: GatewayOverlay? { configuration?.overlay }

    /// What puts IP_ADDR on LAN_IF: with an overlay, the link first (its readiness then asks for
    /// the address); otherwise the address, LAN_IF being someone else's link.
    func ensureLAN() -> [Action] {
        overlay == nil ? [.ensureLANAddress] : [.ensureOverlayLink]
    }

    /// The overlay's events that every phase but shutdown answers alike; nil for any other event.
    /// A failure to set the link up is not here: it kills the switch where a missing address does.
    mutating func handleOverlay(_ event: Event) -> [Action]? {
        switch event {
        case .overlayLinkReady:
            // The route need not wait for the address: it leads to the pods by the WAN.
            return isConfigured && overlay != nil ? [.ensureLANAddress, .ensureOverlayRoute] : []
        case .overlayLinkLost:
            return isConfigured && overlay != nil ? ensureLAN() : []
        case .overlayRouteMissing:
            return isConfigured && overlay != nil ? [.ensureOverlayRoute] : []
        case .overlayRouteInstalled, .overlayRouteFailed:
            // A failure is logged; the next event about the link, the route or the WAN tries again.
            // Without the route the gateway's answers to clients go into the tunnel, not the WAN.
            return []
        default:
            return nil
        }
    }

    /// The WAN is up with carrier. When it was down, the kernel dropped the routes through it:
    /// with an overlay, its route is asked for again.
    mutating func wanCameUp() -> [Action] {
        let wasDown = !wanUp
        wanUp = true
        return wasDown && isConfigured && overlay != nil ? [.ensureOverlayRoute] : []
    }

    /// Why the overlay link failed, for the reason the status shows.
    func overlayLinkFailure(_ message: String) -> String {
        "the overlay link \(configuration?.lanInterface ?? "LAN_IF") could not be set up: \(message)"
    }
}
