import StateMachine
import SystemSupport
import Watchers

extension Configuration {
    /// The configuration with PORT_FWD_FILE's forwards joined to PORT_FWD's, the file read now on
    /// the calling thread (for `rules`; `run` reads it off its effects, `ConfigurationFiles`);
    /// itself when PORT_FWD_FILE is unset. The failure is the one line `run` exits 78 with.
    public func loadingPortForwardFile() -> Result<Configuration, ConfigurationError> {
        guard let file = portForwardFile else { return .success(self) }
        switch TextFile.read(file, limit: FileWatcher.maximumSize) {
        case .success(let text):
            do {
                return .success(try addingPortForwards(fromFile: text))
            } catch {
                return .failure(error)
            }
        case .failure(let error):
            return .failure(ConfigurationError("PORT_FWD_FILE", file, "cannot be read: \(error)"))
        }
    }
}
