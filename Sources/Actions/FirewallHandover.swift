import StateMachine
import Synchronization

/// The Firewall `vpnsup run` (or `join`) commits the lockdown with on the main thread, before any
/// other thread exists, kept for the effects' thread that drives the table from then on. Closing
/// a NETLINK_NETFILTER socket makes the kernel finish nf_tables' deferred destruction of what the
/// commit replaced, an RCU grace period of several milliseconds spent before the supervisor could
/// start; keeping the socket open spares that wait and a second socket. With it goes the ruleset
/// generation the commit left: whoever takes the Firewall can tell whether anything was committed
/// since, and need not commit the same lockdown again if nothing was.
public enum FirewallHandover {
    /// Sendable because one thread at a time uses the Firewall: main.swift's until it is kept,
    /// then `take()`'s caller's.
    private struct Kept: @unchecked Sendable {
        var firewall: Firewall?
        var generation: UInt32?
    }
    private static let kept = Mutex(Kept())

    /// Commits `ruleset` through a new Firewall and keeps that Firewall for `take()`. Returns
    /// whether the commit succeeded; on failure nothing is kept, and the next commit reports why.
    @discardableResult
    public static func commitAndKeep(_ ruleset: Ruleset) -> Bool {
        let firewall: Firewall, generation: UInt32?
        do {
            firewall = try Firewall()
            generation = try firewall.commit(ruleset, readingGeneration: true)
        } catch {
            return false
        }
        kept.withLock { $0 = Kept(firewall: firewall, generation: generation) }
        return true
    }

    /// The kept Firewall, once, with the ruleset generation its commit left (nil when it could
    /// not be read): whoever takes it owns it from then on.
    public static func take() -> (firewall: Firewall, generation: UInt32?)? {
        let taken = kept.withLock { kept in
            defer { kept = Kept() }
            return kept
        }
        return taken.firewall.map { ($0, taken.generation) }
    }
}
