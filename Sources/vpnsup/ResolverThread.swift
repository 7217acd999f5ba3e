import Actions
import Watchers

extension Resolver {
    /// Resolves on a thread of its own: the resolver blocks (bounded by its budget), and neither
    /// the driver's actor nor a thread of the cooperative pool should, so a SIGTERM during
    /// resolution is still handled at once.
    func resolveOnOwnThread(_ names: [String]) async -> ResolverOutcome {
        await withCheckedContinuation { continuation in
            do {
                try ReaderThread.start(name: "vpnsup-resolve") {
                    continuation.resume(returning: self.resolve(names))
                }
            } catch {
                // No thread to be had: block here rather than not resolve.
                continuation.resume(returning: resolve(names))
            }
        }
    }
}

extension TunnelProbe {
    /// Runs the probe on a thread of its own, so that the driver keeps handling events.
    func runOnOwnThread() async -> String? {
        await withCheckedContinuation { continuation in
            do {
                try ReaderThread.start(name: "vpnsup-probe") {
                    continuation.resume(returning: self.run())
                }
            } catch {
                continuation.resume(returning: "no thread for the probe: \(error)")
            }
        }
    }
}
