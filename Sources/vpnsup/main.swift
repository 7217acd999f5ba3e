import Watchers

// Before any thread exists, so that every thread inherits the mask and the signal watcher alone
// receives SIGTERM, SIGINT, SIGHUP and SIGCHLD.
SignalWatcher.blockHandledSignals()

await Vpnsup.main()
