import Actions
import ArgumentParser
import FoundationEssentials
import StateMachine
import Supervisor
import SystemSupport

/// `vpnsup rules`: the dry run. Needs no root and touches nothing: it prints what `run` would
/// commit, after the remote plan `run` would follow, and exits 78 where `run` would.
struct Rules: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print, in nft syntax, the ruleset the configuration produces for a state (a dry run, no root needed).",
        discussion: """
        The output loads with `nft -f`. It starts with the remote plan as comments: every remote of \
        CONFIG as `run` treats it (pinned as written, resolved at run time and pinned with its port \
        and protocol, or skipped and why). Remotes given by host name are resolved only by `run`, \
        so the ruleset pins the IPv4 remotes alone. Exits 78, with the line `run` would print, where \
        `run` would refuse the configuration. States of the lockdown policy (Init, Killswitched) need \
        no CONFIG: `run` commits the lockdown before it reads it.
        """
    )

    @OptionGroup var settings: SettingsOptions
    @Option(help: "The state whose ruleset to print: \(State.allCases.map(\.rawValue).joined(separator: ", ")).")
    var state: String = State.tunnelUp.rawValue

    mutating func run() async throws { try await execute() }

    func execute() async throws {
        guard let state = State(rawValue: state) else {
            StandardError.writeLine("--state \(self.state) is not a state: one of \(State.allCases.map(\.rawValue).joined(separator: ", "))")
            throw ExitCode(StateMachine.ExitCode.configuration)
        }
        let values = settings.values(environment: ProcessInfo.processInfo.environment)
        var text = ""
        let ruleset: Ruleset
        if state.policy == .lockdown {
            // The lockdown is what `run` commits before it reads CONFIG: it needs none.
            do {
                ruleset = try Configuration(values).ruleset(state.policy, endpoints: [])
            } catch {
                StandardError.writeLine(error.description)
                throw ExitCode(StateMachine.ExitCode.configuration)
            }
        } else if let wireGuard = WireGuardReview.load(values) {
            switch wireGuard {
            case .success(let review):
                text += review.planComment
                ruleset = review.configuration.ruleset(state.policy, for: review.layout)
            case .failure(let rejection):
                StandardError.writeLine(rejection.line)
                throw ExitCode(StateMachine.ExitCode.configuration)
            }
        } else {
            switch ConfigurationReview.load(values) {
            case .success(let review):
                text += review.planComment
                ruleset = review.configuration.ruleset(state.policy, endpoints: review.plan.literalEndpoints)
            case .failure(let rejection):
                StandardError.writeLine(rejection.line)
                throw ExitCode(StateMachine.ExitCode.configuration)
            }
        }
        text += "# vpnsup rules for \(state) (policy \(state.policy))\n"
        text += ruleset.nftText
        print(text, terminator: "")
    }
}

/// A configuration rejected before anything runs: the one line for stderr (exit 78).
struct ConfigurationRejection: Error {
    var line: String
    /// The vetting, when it got that far (its findings before the refusal).
    var vetted: VettedOpenVPNConfig?
}

/// What `run` reads before it starts OpenVPN, checked as `run` checks it: the variables, the
/// OpenVPN configuration vetted and planned (`OpenVPNConfigReview`, which `run` reads it through
/// too). Shared by `rules` and `check`.
struct ConfigurationReview {
    let configuration: Configuration
    let vetted: VettedOpenVPNConfig
    let plan: RemotePlan

    static func load(_ values: [String: String]) -> Result<ConfigurationReview, ConfigurationRejection> {
        let configuration: Configuration
        do {
            configuration = try Configuration(values).loadingPortForwardFile().get()
        } catch {
            return .failure(ConfigurationRejection(line: error.description))
        }
        let path = configuration.openvpnConfigPath
        let text: String
        switch TextFile.read(path) {
        case .success(let read): text = read
        case .failure(let error): return .failure(ConfigurationRejection(line: error.line(variable: "CONFIG")))
        }
        // As `run` reads it, at start and on SIGHUP.
        let review = OpenVPNConfigReview(text: text, path: path)
        if let refusal = review.refusal { return .failure(ConfigurationRejection(line: refusal, vetted: review.vetted)) }
        return .success(ConfigurationReview(configuration: configuration, vetted: review.vetted, plan: review.plan))
    }

    /// The findings and the plan as nft comments.
    var planComment: String {
        var text = ""
        for finding in vetted.findings { text += "# \(vetted.located(finding))\n" }
        for entry in plan.entries { text += "# \(entry)\n" }
        return text
    }
}
