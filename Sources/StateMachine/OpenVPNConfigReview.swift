/// What vpnsup makes of an OpenVPN configuration before anything runs: the vetting (what reaches
/// OpenVPN), the remote plan (how `run` treats each remote) and, when the file cannot be used, the
/// one line every command prints before exiting 78. `vpnsup run` (at start and on SIGHUP),
/// `vpnsup rules` and `vpnsup check` all read a configuration through this, so what the dry run
/// and the check say is what `run` does.
public struct OpenVPNConfigReview: Sendable {
    public let vetted: VettedOpenVPNConfig
    public let plan: RemotePlan
    /// Why the configuration cannot be used (a refused line, or no usable remote); nil if it can.
    public let refusal: String?

    /// `text` is the contents of the file at `path` (named in every message).
    public init(text: String, path: String) {
        vetted = OpenVPNConfigVetting.vet(text, path: path)
        plan = RemotePlan(vetted)
        refusal = vetted.error ?? plan.problem(path: path)
    }

    /// The remotes `run` resolves and pins.
    public var remotes: [Remote] { plan.remotes }

    /// The profiles `run` does not use, with why.
    public var skipped: [RemotePlan.Entry] {
        plan.entries.filter { if case .skipped = $0.treatment { true } else { false } }
    }
}

extension OpenVPNConfigFinding {
    /// The finding with the file's path, as the log, `check` and `rules` print it:
    /// `CONFIG=/config/vpn.ovpn:4: up /etc/x: dropped: runs a program (...)`.
    public func located(in path: String) -> String {
        let subject = directive.isEmpty ? "" : "\(directive): "
        switch action {
        case .refused: return "CONFIG=\(path):\(line): \(subject)\(reason)"
        case .dropped: return "CONFIG=\(path):\(line): \(subject)dropped: \(reason)"
        case .translated: return "CONFIG=\(path):\(line): \(subject)translated to \(replacement ?? ""): \(reason)"
        }
    }
}

extension RemotePlan.Entry {
    /// Why the profile is skipped, nil when `run` uses it.
    public var skipReason: String? {
        if case .skipped(let reason) = treatment { reason } else { nil }
    }

    /// A skipped profile OpenVPN would still try unless told to skip it (`proto-force` disables the
    /// others for OpenVPN itself).
    public var needsSkipping: Bool { skipReason != nil && profile.disabledBy == nil }
}
