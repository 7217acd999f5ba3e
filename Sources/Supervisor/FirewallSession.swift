import Actions
import StateMachine
import Watchers

/// The Firewall and the nftables monitor that watches table `inet vpnsup`, created with the first
/// commit; the monitor starts before that commit, so nothing done to the table from then on goes
/// unseen. Used on the effects' executor only, by `vpnsup run`'s effects and `vpnsup join`'s.
///
/// The Firewall main.swift committed the lockdown with is taken over (FirewallHandover). If the
/// ruleset generation, read once the monitor runs, is still the one that commit left, nothing was
/// committed in between: the kernel holds that lockdown, verified, and the first commit of the same
/// lockdown is not sent again.
final class FirewallSession {
    private(set) var firewall: Firewall?
    private var monitor: NftablesMonitor?
    /// The generation main.swift's lockdown left, while the kernel is known to hold it still.
    private var unchangedLockdown: UInt32?
    private let log: SupervisorLog
    /// Takes the monitor's reports, on its thread, to the interpreter.
    private let receiver: EventSink<NftablesEvent>

    init(log: SupervisorLog, receiver: EventSink<NftablesEvent>) {
        self.log = log
        self.receiver = receiver
    }

    func ensure() throws -> Firewall {
        if let firewall { return firewall }
        // The one main.swift committed the lockdown with, if it did: its socket stays open.
        let handed = FirewallHandover.take()
        let created = try handed?.firewall ?? Firewall()
        firewall = created
        do {
            let monitor = try NftablesMonitor.start(table: Ruleset.tableName, ignoring: [created.portID],
                                                    receiver: receiver)
            self.monitor = monitor
            if !monitor.filteredInKernel {
                log.log(.warning, "the nftables monitor filters vpnsup's own commits in user space only")
            }
            // Read after the monitor started: a commit after this read is the monitor's to see.
            if let generation = handed?.generation, (try? created.generation()) == generation {
                unchangedLockdown = generation
            }
        } catch {
            log.log(.warning, "outside changes to table inet vpnsup will not be noticed: nftables monitor: \(error)")
        }
        return created
    }

    /// Commits `ruleset`, unless this is the first commit, of the lockdown main.swift committed,
    /// and nothing was committed since: then returns that commit's generation and sends nothing.
    /// Every later commit is sent.
    func commit(_ ruleset: Ruleset) throws -> UInt32? {
        let firewall = try ensure()
        defer { unchangedLockdown = nil }
        if let unchangedLockdown, ruleset == .lockdown { return unchangedLockdown }
        try firewall.commit(ruleset)
        return nil
    }

    func stop() {
        monitor?.stop()
    }
}
