import CNftnl
import StateMachine

extension Firewall {
    /// Applies `diff` to the committed maps `tcp_forwards`/`udp_forwards` in one transaction:
    /// element deletes, then element adds, nothing else. The table, its chains, rules and the
    /// other elements stay as they are (same kernel objects, same handles), so a connection
    /// through an unchanged forward never notices; the kernel commits all of it or, if any
    /// element is refused (a delete of a missing one, an add of a present one), none of it.
    /// Then reads the maps back and checks that they hold exactly `forwards`, the full set after
    /// the change.
    ///
    /// Throws `.invalidRuleset` without sending anything when `diff.needsFullCommit` (a map would
    /// have to appear or vanish, with the rule that looks it up: commit the whole ruleset then).
    public func applyForwardChanges(_ diff: PortForwardDiff, expecting forwards: [PortForward]) throws(FirewallError) {
        guard !diff.needsFullCommit else {
            throw FirewallError(kind: .invalidRuleset,
                                message: "the forward change adds or removes a whole map: commit the ruleset instead")
        }
        guard !diff.isEmpty else { return }
        let batch = socket.makeBatch()
        for map in ForwardMap.maps(for: diff.removed + diff.added) {
            let removed = map.entries(of: diff.removed)
            for start in stride(from: 0, to: removed.count, by: ForwardMapFormat.elementsPerMessage) {
                let end = min(start + ForwardMapFormat.elementsPerMessage, removed.count)
                let keys = try NftSet(keys: removed[start..<end], of: map, table: table)
                batch.append("delete elements \(start + 1)-\(end) of \(removed.count) from map \(map.name)",
                             type: NFT_MSG_DELSETELEM.rawValue, flags: 0) {
                    nftnl_set_elems_nlmsg_build_payload($0, keys.pointer)
                }
            }
        }
        for map in ForwardMap.maps(for: diff.added) {
            for start in stride(from: 0, to: map.entries.count, by: ForwardMapFormat.elementsPerMessage) {
                let end = min(start + ForwardMapFormat.elementsPerMessage, map.entries.count)
                let elements = try NftSet(elements: map.entries[start..<end], of: map, table: table, id: 0)
                // EXCL: a key still present after the deletes means the kernel is not in the
                // state the diff was computed from; refuse rather than overwrite.
                batch.append("add elements \(start + 1)-\(end) of \(map.entries.count) to map \(map.name)",
                             type: NFT_MSG_NEWSETELEM.rawValue, flags: NLM_F_CREATE | NLM_F_EXCL) {
                    nftnl_set_elems_nlmsg_build_payload($0, elements.pointer)
                }
            }
        }
        batch.finish()
        let result = try socket.send(batch)
        if let first = result.errors.first {
            throw FirewallError(kernel: first, doing: batch.descriptions[first.sequence] ?? "message \(first.sequence)",
                                otherErrors: result.errors.count - 1)
        }
        let differences = try mapDifferences(expected: ForwardMap.maps(for: forwards).map(NftMapState.init))
        guard differences.isEmpty else {
            var message = "the forward maps do not match the forwards after the change: " + differences.joined(separator: "; ")
            if result.lostReplies { message += " (some kernel replies were lost to a full receive buffer)" }
            throw FirewallError(kind: .verification, message: message)
        }
    }
}

extension NftSet {
    /// The keys (public ports) of `entries` of `map`: what an element delete needs.
    convenience init(keys entries: ArraySlice<ForwardMap.Entry>, of map: ForwardMap, table: String) throws(FirewallError) {
        try self.init(name: map.name, table: table)
        for entry in entries {
            guard let element = nftnl_set_elem_alloc() else { throw FirewallError.outOfMemory("nftnl_set_elem_alloc") }
            let key = entry.nftKey
            key.withUnsafeBytes { _ = nftnl_set_elem_set(element, nftAttr(NFTNL_SET_ELEM_KEY), $0.baseAddress, UInt32($0.count)) }
            nftnl_set_elem_add(pointer, element)
        }
    }
}
