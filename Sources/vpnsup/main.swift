import ArgumentParser
import Watchers

// Before any thread exists, so that every thread inherits the mask and the signal watcher alone
// receives SIGTERM, SIGINT, SIGHUP and SIGCHLD.
SignalWatcher.blockHandledSignals()

// Dispatched by hand: from top-level code, `AsyncParsableCommand.main()` and even `Run().run()`
// resolve to the synchronous `ParsableCommand.run()`, which only prints help.
do {
    var command = try Vpnsup.parseAsRoot()
    switch command {
    case let run as Run: try await run.execute()
    case let status as Status: try await status.execute()
    default: try command.run()
    }
} catch {
    Vpnsup.exit(withError: error)
}
