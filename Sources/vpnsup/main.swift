import Actions
import ArgumentParser
import Glibc
import StateMachine
import SystemSupport
import Watchers

// `run` and `join` take the namespace's lock, then commit the lockdown before anything else:
// before the arguments are parsed, the configuration read or a thread started, so the kill switch
// is in the kernel a few hundred microseconds after exec. It needs no configuration. If it fails
// (no CAP_NET_ADMIN, say), the driver's own first commit, which comes next anyway, reports why.
// The Firewall is kept for the effects (FirewallHandover: closing its socket would cost a kernel
// wait before the supervisor could start), which skip their first commit of the same lockdown if
// nothing was committed since.
if CommandLine.arguments.count > 1, ["run", "join"].contains(CommandLine.arguments[1]) {
    // First the namespace's one-supervisor lock: a second `run` (or a `join`, which keeps the same
    // table for a client pod) must not touch the first's table.
    do {
        try NamespaceLock.acquire(NamespaceLock.supervisor)
    } catch {
        StandardError.writeLine(error.description)
        exit(ExitCode.alreadyRunning)
    }
    FirewallHandover.commitAndKeep(.lockdown)
}

// `run` alone, its settings all from the environment, needs no parser (Run.executeFromEnvironment).
let runFromEnvironment = CommandLine.arguments.count == 2 && CommandLine.arguments[1] == "run"

// Parsed on the main thread before any other thread exists. Only `run` blocks its signals, and
// before any thread exists, so that every thread inherits the mask and the signal watcher alone
// receives SIGTERM, SIGINT, SIGHUP and SIGCHLD. The other subcommands keep the default
// dispositions: `timeout 2 vpnsup health` must be able to stop them.
let parsed: ParsableCommand?
do {
    parsed = runFromEnvironment ? nil : try Vpnsup.parseAsRoot()
} catch {
    Vpnsup.exit(withError: error)
}
if runFromEnvironment || parsed is Run {
    SignalWatcher.blockHandledSignals()
    MallocArenas.shareOne()
}

// No top-level `await`: that hands the main thread to libdispatch, which parks it in
// sigsuspend() with an empty mask, where it takes (and dies of) the SIGTERM meant for the signal
// watcher, and swallows SIGCHLD. The main thread instead sleeps with the signals blocked.
//
// Commands are dispatched by hand: `AsyncParsableCommand.main()` and even `Run().run()` resolve
// to the synchronous `ParsableCommand.run()` from here, which only prints help.
Task.detached { [parsed] in
    do {
        switch parsed {
        case nil: try await Run.executeFromEnvironment()
        case let run as Run: try await run.execute()
        case let status as Status: try await status.execute()
        case let rules as Rules: try await rules.execute()
        case let check as Check: try await check.execute()
        case let health as Health: try await health.execute()
        case let hostRules as HostRules: try await hostRules.execute()
        case let join as Join: try await join.execute()
        case var command?: try command.run()
        }
        Vpnsup.exit()
    } catch {
        Vpnsup.exit(withError: error)
    }
}
while true { pause() }
