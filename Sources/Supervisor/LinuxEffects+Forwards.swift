import Actions
import Synchronization
import StateMachine
import Watchers

/// PORT_FWD_FILE while vpnsup runs. The file is watched (`FileWatcher`: writes, renames,
/// Kubernetes' `..data` swaps) and read again on SIGHUP, always by the watcher's thread, which
/// validates each reading (off the interpreter and off Swift's cooperative pool: 10,000 lines take
/// a while) and posts it as `portForwardsRead` in the order it was made, for the machine to decide
/// on.
///
/// Reading is `FileWatcher.read`: non-blocking open, regular files of at most 8 MiB only, so a
/// FIFO or a huge file is refused rather than waited on. It has no deadline: a file on a hung
/// network filesystem could still hold the watcher's thread (never the interpreter nor the
/// effects); the system layer's configuration file loader (`ConfigurationFile.read` with a
/// timeout, branch `system`) is to replace it in both places, at start-up and here.
final class PortForwardFileSource: Sendable {
    let path: String
    /// The configuration as the environment gives it, PORT_FWD's forwards only: each reading is
    /// added to it, so the file's lines are checked against PORT_FWD's as at start-up.
    let base: Configuration
    /// nil when the directory could not be watched: then only SIGHUP reads the file again.
    let watcher: FileWatcher?
    /// SIGHUP readings without a watcher, numbered: only the newest is posted.
    private let requested = Mutex(0)

    private init(path: String, base: Configuration, watcher: FileWatcher?) {
        self.path = path
        self.base = base
        self.watcher = watcher
    }

    /// Starts watching PORT_FWD_FILE and reads it: the configuration with the file's forwards, or
    /// the one line `run` exits 78 with. Readings after this one are posted to `inbox`. Without
    /// PORT_FWD_FILE: `base` itself, and no source.
    static func start(_ base: Configuration, inbox: Inbox, log: SupervisorLog)
        -> (source: PortForwardFileSource?, result: Result<Configuration, ConfigurationError>) {
        guard let path = base.portForwardFile else { return (nil, .success(base)) }
        var watcher: FileWatcher?
        var unwatched: FileWatcherError?
        do {
            // The watch exists before the first reading: no change can fall between the two.
            // Later readings are validated on the watcher's thread and posted from there.
            watcher = try FileWatcher(path: path) { reading in
                inbox.post(.event(.portForwardsRead(Self.reading(reading, base: base))))
            }
        } catch {
            unwatched = error
        }
        let result = base.addingPortForwardFile(watcher?.initial ?? FileWatcher.read(path))
        guard case .success = result else {
            watcher?.stop()
            return (nil, result)
        }
        if let unwatched {
            log.log(.warning, "PORT_FWD_FILE=\(path) is read again on SIGHUP only: its directory cannot be watched (\(unwatched))")
        }
        return (PortForwardFileSource(path: path, base: base, watcher: watcher), result)
    }

    /// A later reading, validated as at start-up, as the machine takes it.
    static func reading(_ reading: FileWatcher.Reading, base: Configuration) -> PortForwardReading {
        switch base.addingPortForwardFile(reading) {
        case .success(let configuration): .accepted(configuration.portForwards)
        case .failure(let error): .refused(error.description)
        }
    }

    /// SIGHUP: a reading now, posted as `portForwardsRead` even when nothing changed.
    func reread(inbox: Inbox) {
        if let watcher {
            watcher.reread()
            return
        }
        let number = requested.withLock { $0 += 1; return $0 }
        let work: @Sendable () -> Void = { [self] in
            let reading = Self.reading(FileWatcher.read(path), base: base)
            // A later SIGHUP's reading supersedes this one, whichever thread ends first.
            guard requested.withLock({ $0 == number }) else { return }
            inbox.post(.event(.portForwardsRead(reading)))
        }
        do {
            try ReaderThread.start(name: "vpnsup-forwards", work)
        } catch {
            inbox.post(.event(.portForwardsRead(.refused("PORT_FWD_FILE=\(path) cannot be read: no thread to read it on: \(error)"))))
        }
    }

    func stop() { watcher?.stop() }
}

extension LinuxEffects {
    /// The map element changes of `diff`, in one transaction; the maps are read back against the
    /// forwards the machine will then have in force.
    func applyForwardChanges(_ diff: PortForwardDiff, for machine: Machine) -> [Event] {
        guard let forwards = machine.forwardsBeingApplied else {
            return [.forwardChangesFailed(diff, "no forward change is under way")]
        }
        do {
            try ensureFirewall().applyForwardChanges(diff, expecting: forwards)
            return [.forwardChangesApplied(diff)]
        } catch {
            return [.forwardChangesFailed(diff, "\(error)")]
        }
    }
}
