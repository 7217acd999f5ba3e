import StateMachine
import Watchers

extension Configuration {
    /// The configuration with PORT_FWD_FILE's forwards joined to PORT_FWD's, the file read now on
    /// the calling thread (for `rules`; `run` reads it through `PortForwardFileSource`, off its effects);
    /// itself when PORT_FWD_FILE is unset. The failure is the one line `run` exits 78 with.
    public func loadingPortForwardFile() -> Result<Configuration, ConfigurationError> {
        guard let file = portForwardFile else { return .success(self) }
        return addingPortForwardFile(FileWatcher.read(file))
    }

    /// The configuration with the forwards of a reading of PORT_FWD_FILE (`FileWatcher.read`:
    /// never waits on a FIFO, 8 MiB at most) joined to PORT_FWD's, or why they cannot be. Call it
    /// on the configuration as `init` made it.
    public func addingPortForwardFile(_ reading: FileWatcher.Reading) -> Result<Configuration, ConfigurationError> {
        switch reading {
        case .contents(let text):
            do {
                return .success(try addingPortForwards(fromFile: text))
            } catch {
                return .failure(error)
            }
        case .unreadable(let why):
            return .failure(ConfigurationError("PORT_FWD_FILE", portForwardFile ?? "", "cannot be read: \(why)"))
        }
    }
}
