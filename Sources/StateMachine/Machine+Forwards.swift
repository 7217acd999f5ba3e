/// PORT_FWD_FILE read again (it changed, or SIGHUP), as the effects validated it: the same syntax
/// and errors as at start-up.
public enum PortForwardReading: Hashable, Sendable {
    /// Every forward that would be in force: PORT_FWD's, then the file's, in order.
    case accepted([PortForward])
    /// Why the file cannot be used: unreadable, or the one line naming `file:line`.
    case refused(String)
}

/// A change of the forwards sent to the kernel as map element changes, not yet reported back.
struct ForwardChange: Hashable, Sendable {
    var diff: PortForwardDiff
    /// The forwards in force once the kernel has the change.
    var forwards: [PortForward]
}

// Live port forwards: a new reading of PORT_FWD_FILE is unchanged (nothing to do), refused (the
// forwards in force stay), or accepted. Accepted under the up policy, committed, it is sent as
// map element changes in one transaction, and the forwards in force change only once the kernel
// reports them; a failed element change falls back to committing the whole up ruleset. Under the
// other policies, whose rulesets hold no forwards, the new forwards are what the next up commit
// uses.
extension Machine {
    /// The forwards in force: what the up ruleset holds, or will hold at its next commit.
    public var portForwards: [PortForward] { loaded?.configuration.portForwards ?? [] }

    /// The forwards an element change under way puts in force (the effects read the maps back
    /// against them); nil when none is under way.
    public var forwardsBeingApplied: [PortForward]? { forwardChange?.forwards }

    /// The events about forwards, in every phase but shutdown.
    mutating func handleForwards(_ event: Event) -> [Action] {
        switch event {
        case .portForwardsRead(.accepted(let forwards)):
            return adoptForwards(forwards)
        case .forwardChangesApplied(let diff):
            guard let change = forwardChange, change.diff == diff else { return [] }
            forwardChange = nil
            loaded?.configuration.portForwards = change.forwards
            return []
        case .forwardChangesFailed(let diff, _):
            guard let change = forwardChange, change.diff == diff else { return [] }
            // The kernel may hold the old maps, the new ones or (a read-back that disagreed)
            // neither: the whole up ruleset with the new forwards settles it.
            forwardChange = nil
            loaded?.configuration.portForwards = change.forwards
            return requested == .up ? recommit() : []
        default:
            // A refused reading: the forwards in force stay (the record says why).
            return []
        }
    }

    private mutating func adoptForwards(_ forwards: [PortForward]) -> [Action] {
        guard loaded != nil else { return [] }
        if let change = forwardChange {
            if change.forwards == forwards { return [] }
            // Another reading before the kernel answered: commit the newest set whole.
            forwardChange = nil
            loaded?.configuration.portForwards = forwards
            return requested == .up ? recommit() : []
        }
        let diff = PortForwardDiff(from: portForwards, to: forwards)
        guard !diff.isEmpty else {
            // The same forwards (perhaps in another order, which only the status shows).
            loaded?.configuration.portForwards = forwards
            return []
        }
        guard requested == .up else {
            // The lockdown and connecting rulesets hold no forwards: the next up commit uses them.
            loaded?.configuration.portForwards = forwards
            return []
        }
        guard committed == .up, !diff.needsFullCommit else {
            // A map appears or goes (with the rule that looks it up), or the kernel does not hold
            // the up ruleset as committed: the whole ruleset, with the new forwards.
            loaded?.configuration.portForwards = forwards
            return recommit()
        }
        forwardChange = ForwardChange(diff: diff, forwards: forwards)
        return [.applyForwardChanges(diff)]
    }

    /// SIGHUP reads PORT_FWD_FILE again, when there is one.
    var rereadsForwards: [Action] {
        configuration?.portForwardFile == nil ? [] : [.readPortForwardFile]
    }
}
