import Actions
import StateMachine

extension Configuration {
    /// The configuration with PORT_FWD_FILE's forwards joined to PORT_FWD's, the file read now;
    /// itself when PORT_FWD_FILE is unset. The failure is the one line `run` exits 78 with.
    public func loadingPortForwardFile() -> Result<Configuration, ConfigurationError> {
        guard let file = portForwardFile else { return .success(self) }
        switch TextFile.read(file) {
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
