import Actions
import StateMachine
import Watchers

/// The Firewall and the nftables monitor that watches table `inet vpnsup`, created with the first
/// commit; the monitor starts before that commit, so nothing done to the table from then on goes
/// unseen. Used on the effects' executor only, by `vpnsup run`'s effects and `vpnsup join`'s.
final class FirewallSession {
    private(set) var firewall: Firewall?
    private var monitor: NftablesMonitor?
    private let log: SupervisorLog
    /// Hands the monitor's reports to the interpreter.
    private let watch: (NftablesMonitor) -> Void

    init(log: SupervisorLog, watch: @escaping (NftablesMonitor) -> Void) {
        self.log = log
        self.watch = watch
    }

    func ensure() throws -> Firewall {
        if let firewall { return firewall }
        // The one main.swift committed the lockdown with, if it did: its socket stays open.
        let created = try FirewallHandover.take() ?? Firewall()
        firewall = created
        do {
            let monitor = try NftablesMonitor.start(table: Ruleset.tableName, ignoring: [created.portID])
            self.monitor = monitor
            if !monitor.filteredInKernel {
                log.log(.warning, "the nftables monitor filters vpnsup's own commits in user space only")
            }
            watch(monitor)
        } catch {
            log.log(.warning, "outside changes to table inet vpnsup will not be noticed: nftables monitor: \(error)")
        }
        return created
    }

    func stop() {
        monitor?.stop()
    }
}
