import Actions
import ArgumentParser
import FoundationEssentials
import Logging
import StateMachine
import Supervisor
import Watchers

/// `vpnsup join`: a Kubernetes client pod's sidecar (docs/kubernetes.md).
struct Join: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join a client pod to the VPN gateway's overlay, behind a kill switch (a Kubernetes sidecar).",
        discussion: """
        Commits the pod's kill switch first (only cluster networks leave by the pod's interface,
        everything else only through the overlay), runs the pod's split DNS forwarder on
        127.0.0.1:53, finds the gateway by its Service name, builds the overlay to it and routes
        the pod into it; follows the gateway when it moves. Configured by the environment:
        GATEWAY, GATEWAY_ADDR, POD_CIDRS, CLUSTER_CIDRS, and optionally CLUSTER_DNS,
        CLUSTER_DOMAIN, OVERLAY_VNI, OVERLAY_PORT, OVERLAY_IF, UNDERLAY_IF, RUNTIME_DIR. Bad
        configuration exits with 78 (EX_CONFIG) after the lockdown has been committed.
        """
    )

    static let variables = ["GATEWAY", "GATEWAY_ADDR", "POD_CIDRS", "CLUSTER_CIDRS", "CLUSTER_DNS", "CLUSTER_DOMAIN",
                            "OVERLAY_VNI", "OVERLAY_PORT", "OVERLAY_IF", "UNDERLAY_IF", "RUNTIME_DIR"]

    mutating func run() async throws { try await execute() }

    func execute() async throws {
        FileCreation.restrict()
        let environment = ProcessInfo.processInfo.environment
        var values: [String: String] = [:]
        for name in Self.variables { values[name] = environment[name] }
        let level = environment["VPNSUP_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let signals = HeldUntilOpened<SignalEvent>()
        try SignalWatcher.start(receiver: .calling { signals.send($0) })
        let code = await LinuxJoin.run(values: values, logger: Logger(label: "vpnsup-join"), signals: signals)
        Termination.exit(code)
    }
}
