/// What changes between two sets of port forwards, as map elements: the forwards to delete and
/// the forwards to add. A forward whose target changes is both (its key, the public port, stays).
/// Applied in one nftables transaction (Actions: `Firewall.applyForwardChanges`), deletes first,
/// it leaves every other element, chain and rule as it was, so connections through unchanged
/// forwards are never disturbed.
///
/// The phase-2 driver wiring (SIGHUP or a change of PORT_FWD_FILE seen by `FileWatcher`):
///
///     let next = try base.addingPortForwards(fromFile: text)     // refused: keep the old, say why in status
///     let diff = PortForwardDiff(from: current.portForwards, to: next.portForwards)
///     if diff.isEmpty { nothing }
///     else if diff.needsFullCommit || committed policy is not `up` { commit the whole ruleset for `next` }
///     else { try firewall.applyForwardChanges(diff, expecting: next.portForwards) }
///
/// where `base` is the configuration as `Configuration.init` made it (PORT_FWD only).
public struct PortForwardDiff: Hashable, Sendable {
    /// Forwards to delete, by public port then protocol.
    public var removed: [PortForward]
    /// Forwards to add, in the same order.
    public var added: [PortForward]
    /// A protocol has forwards on one side and none on the other: its map, and the rule that
    /// looks it up, exist only while it has forwards (`NetworkLayout.forwardMaps`), so element
    /// changes alone cannot express this change.
    public var needsFullCommit: Bool

    public init(from old: [PortForward], to new: [PortForward]) {
        let before = Set(old), after = Set(new)
        removed = before.subtracting(after).sorted(by: PortForwardDiff.order)
        added = after.subtracting(before).sorted(by: PortForwardDiff.order)
        needsFullCommit = Set(old.map(\.transport)) != Set(new.map(\.transport))
    }

    public var isEmpty: Bool { removed.isEmpty && added.isEmpty }

    static func order(_ a: PortForward, _ b: PortForward) -> Bool {
        (a.publicPort, a.transport.rawValue) < (b.publicPort, b.transport.rawValue)
    }
}

extension ForwardMap {
    /// The maps `forwards` make: one per protocol that has any, named as the ruleset names them
    /// (`NetworkLayout.forwardMaps`, which a test holds this to).
    public static func maps(for forwards: [PortForward]) -> [ForwardMap] {
        TransportProtocol.allCases.compactMap { transport in
            let entries = forwards.filter { $0.transport == transport }
                .map { Entry(publicPort: $0.publicPort, target: $0.target, targetPort: $0.targetPort) }
            return entries.isEmpty ? nil : ForwardMap(name: "\(transport)_forwards", transport: transport, entries: entries)
        }
    }

    /// This map's entries for `forwards` of its protocol.
    public func entries(of forwards: [PortForward]) -> [Entry] {
        forwards.filter { $0.transport == transport }
            .map { Entry(publicPort: $0.publicPort, target: $0.target, targetPort: $0.targetPort) }
    }
}
