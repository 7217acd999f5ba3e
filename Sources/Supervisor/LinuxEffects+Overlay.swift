import Actions
import StateMachine

// The Kubernetes gateway's overlay (docs/kubernetes.md): LAN_IF as a vxlan link over WAN_IF, and
// the pod networks routed by the WAN's next hop. What the link and the routes are is decided in
// the pure core (`GatewayOverlay.link`, the machine's actions); here they are made so.
extension LinuxEffects {
    func ensureOverlayLink(_ configuration: Configuration?) -> [Event] {
        guard let overlay = configuration?.overlay else { return [.overlayLinkFailed("no overlay in the configuration")] }
        let parameters = VxlanLink.Parameters(overlay.link)
        do {
            let outcome = try VxlanLink.ensure(parameters)
            if outcome != .unchanged { log.log(.info, "overlay link \(outcome): \(parameters)") }
            return [.overlayLinkReady]
        } catch {
            return [.overlayLinkFailed("\(error)")]
        }
    }

    func ensureOverlayRoute(_ configuration: Configuration?) -> [Event] {
        guard let overlay = configuration?.overlay else { return [.overlayRouteFailed("no overlay in the configuration")] }
        do {
            let nextHop = try VxlanRouting.nextHop(of: overlay.underlay)
            for network in overlay.settings.podNetworks {
                try VxlanRouting.replaceRoute(network, via: nextHop, dev: overlay.underlay)
            }
            log.log(.info, "routed \(overlay.settings.podNetworks.map(\.description).joined(separator: ", ")) via \(nextHop) dev \(overlay.underlay)")
            return [.overlayRouteInstalled]
        } catch {
            return [.overlayRouteFailed("\(error)")]
        }
    }
}
