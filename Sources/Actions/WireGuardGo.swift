import Glibc
import StateMachine
import SystemSupport

/// Why the UAPI socket name cannot be used.
public struct WireGuardSocketClaimError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Reason: Hashable, Sendable {
        /// A live device serves that name: another router (in another network namespace of this
        /// machine, since the directory is shared) or a wireguard-go vpnsup did not start.
        case inUse(pid: Int32?)
        case system(SystemError)
    }

    public var path: String
    public var reason: Reason

    public var description: String {
        switch reason {
        case .inUse(let pid):
            "\(path) is served by \(pid.map { "pid \($0)" } ?? "another process"): the tunnel interface name must be unique on this machine"
        case .system(let error): "\(path): \(error)"
        }
    }
}

/// The userspace data plane: Debian's wireguard-go, run in the foreground under vpnsup's
/// supervision as OpenVPN is (spawned by `Spawner`, reaped by the signal watcher, respawned with
/// backoff by the Machine). It creates a TUN link named after the interface and serves UAPI on
/// `/var/run/wireguard/NAME.sock`; vpnsup gives it everything else over that socket.
///
/// The order for one start: `claimSocket` → `WireGuardSocketWatcher` armed → `spawn` → wait for
/// the socket (the link exists by then) → MTU, addresses and IFF_UP on the link
/// (`WireGuardLink.setMTU`, `AddressConfigurator`) → `WireGuardUAPIClient(expectedPID:)` sends
/// `WireGuardUAPIRequest.device`. The last two may swap: wireguard-go starts the handshake when
/// the link comes up, or at once when it is up already.
public enum WireGuardGo {
    public static let defaultExecutable = "wireguard-go"

    /// The environment wireguard-go gets: a PATH, its log level, and WG_PROCESS_FOREGROUND (the
    /// foreground, and no banner recommending the kernel module in the log at each start). No key
    /// ever: the private key goes over the UAPI socket only.
    public static func environment(logLevel: String = "error") -> [String: String] {
        ["PATH": Spawner.defaultSearchPath, "LOG_LEVEL": logLevel, "WG_PROCESS_FOREGROUND": "1"]
    }

    /// `wireguard-go -f NAME`: in the foreground, so vpnsup is its parent and reaps it; stdout
    /// and stderr are vpnsup's (the container log), stdin /dev/null. Returns its pid.
    public static func spawn(interface: String, executable: String = defaultExecutable,
                             logLevel: String = "error") throws -> Int32 {
        try Spawner.spawn(executable: executable, arguments: ["-f", interface], environment: environment(logLevel: logLevel))
    }

    /// Makes the UAPI socket name usable before a spawn: creates `/var/run/wireguard` (0755 less
    /// the umask, as wireguard-go would), removes a stale socket file (nobody listening: left by a wireguard-go
    /// that was killed), and refuses a name a live device serves. A live socket is never removed:
    /// wireguard-go stops when its socket file goes, and the other router's tunnel would go with it.
    public static func claimSocket(interface: String) throws(WireGuardSocketClaimError) {
        let path = WireGuardUAPIClient.socketPath(for: interface)
        func failure(_ error: SystemError) -> WireGuardSocketClaimError {
            WireGuardSocketClaimError(path: path, reason: .system(error))
        }
        do {
            try retryingInterrupts("mkdir \(WireGuardUAPIClient.socketDirectory)") { mkdir(WireGuardUAPIClient.socketDirectory, 0o755) }
        } catch where error.errno == EEXIST {
        } catch {
            throw failure(error)
        }
        var info = stat()
        do {
            try retryingInterrupts("lstat") { lstat(path, &info) }
        } catch where error.errno == ENOENT {
            return
        } catch {
            throw failure(error)
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw failure(SystemError(operation: "not a socket", errno: ENOTSOCK))
        }
        let socket: OwnedDescriptor
        do {
            socket = try UnixSocket.connect(to: path, timeout: .seconds(1), nonBlocking: true)
        } catch {
            guard case .system(let cause) = error else { throw failure(SystemError(operation: "connect", errno: ENAMETOOLONG)) }
            guard cause.errno == ECONNREFUSED else { throw failure(cause) }
            do {
                try retryingInterrupts("unlink stale socket") { unlink(path) }
            } catch where error.errno == ENOENT {
            } catch {
                throw failure(error)
            }
            return
        }
        throw WireGuardSocketClaimError(path: path, reason: .inUse(pid: try? UnixSocket.peer(of: socket.rawValue).pid))
    }
}
