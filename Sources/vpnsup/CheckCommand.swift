import Actions
import ArgumentParser
import FoundationEssentials
import StateMachine

/// `vpnsup check`: every check `run` makes before it needs the network, and OpenVPN's own.
struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the configuration as `run` would, without any network, and say what `run` would do.",
        discussion: """
        Checks the variables, vets CONFIG (prints each line that is dropped, translated or refused \
        and why), prints the remote plan, then runs OpenVPN on the vetted configuration in a network \
        namespace of its own that has no network (`unshare --net`, so it needs root): OpenVPN reads \
        its options and the files they name and loads its keys and certificates, and is stopped as \
        soon as it turns to the network. Exits 0, or 78 with one line naming the file, the line and \
        the option (or OpenVPN's own message). Arguments after `--` go to OpenVPN, as for `run`.
        """
    )

    @OptionGroup var settings: SettingsOptions
    @Flag(help: "Skip OpenVPN's own check (needs no root).")
    var noOpenvpn = false
    @Flag(help: "Print the configuration OpenVPN would get, and nothing else.")
    var printConfig = false
    @Argument(parsing: .postTerminator, help: "Extra OpenVPN arguments, after `--`.")
    var openvpnArguments: [String] = []

    mutating func run() async throws { try await execute() }

    func execute() async throws {
        FileCreation.restrict()
        let review: ConfigurationReview
        switch ConfigurationReview.load(settings.values(environment: ProcessInfo.processInfo.environment)) {
        case .success(let loaded): review = loaded
        case .failure(let rejection):
            // What was found up to the refusal is worth seeing too.
            if let vetted = rejection.vetted { for finding in vetted.findings where finding.action != .refused { print(vetted.located(finding)) } }
            StandardError.writeLine(rejection.line)
            throw ExitCode(StateMachine.ExitCode.configuration)
        }
        if printConfig {
            print(review.vetted.text, terminator: "")
            return
        }
        let configuration = review.configuration
        print("configuration: LAN \(configuration.lanInterface) \(configuration.gateway), WAN \(configuration.wanInterface)")
        print("CONFIG=\(review.vetted.path): \(review.vetted.findings.isEmpty ? "passed to OpenVPN as written" : "\(review.vetted.findings.count) line(s) not passed as written:")")
        for finding in review.vetted.findings { print("  \(finding.level): \(finding)") }
        print("remotes:")
        for entry in review.plan.entries { print("  \(entry)") }
        if noOpenvpn { return }

        let outcome: OpenVPNCheck
        do {
            outcome = try OpenVPNCheck.run(review, extraArguments: openvpnArguments)
        } catch {
            StandardError.writeLine("vpnsup check: OpenVPN could not be run: \(error)")
            throw ExitCode(70) // EX_SOFTWARE: not the configuration's fault
        }
        switch outcome {
        case .accepted(let version):
            print("\(version ?? "OpenVPN"): read the vetted configuration, the files it names and its keys and certificates")
        case .refused(let line):
            StandardError.writeLine(line)
            throw ExitCode(StateMachine.ExitCode.configuration)
        }
    }
}

/// OpenVPN's verdict on the vetted configuration, from a trial run without network.
enum OpenVPNCheck {
    case accepted(version: String?)
    /// The one line to print: CONFIG, and OpenVPN's message with the vetted file's path replaced
    /// by CONFIG's (the line numbers are the same).
    case refused(String)

    static func run(_ review: ConfigurationReview, extraArguments: [String]) throws -> OpenVPNCheck {
        let scratch = try ScratchDirectory(prefix: "vpnsup-check")
        let configName = "openvpn.conf", credentialsName = "credentials"
        defer { scratch.remove([configName, credentialsName]) }
        let configPath = try scratch.write(configName, review.vetted.text)
        // Credentials are not checked here (they travel over the management socket under `run`);
        // a placeholder keeps OpenVPN from asking for them on a terminal.
        let credentials = try scratch.write(credentialsName, "check\ncheck\n")
        let userPath = review.vetted.path
        let directory = userPath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let arguments = ["--net", "--", "openvpn",
                         "--cd", directory.isEmpty ? "/" : directory, "--config", configPath,
                         "--dev", Configuration.tunnelInterface, "--dev-type", "tun",
                         "--auth-user-pass", credentials, "--mark", String(Configuration.transportMark), "--disable-dco"]
            + extraArguments + ["--verb", "3"]
        let trial = try OpenVPNTrial.run(executable: "unshare", arguments: arguments,
                                         environment: ["PATH": Spawner.defaultSearchPath], timeoutSeconds: 20,
                                         stopAt: OpenVPNOutput.isPastKeyLoading)
        let version = trial.lines.first(where: OpenVPNOutput.isVersionBanner).map { String(OpenVPNOutput.message($0).prefix { $0 != "[" }).trimmed }
        if trial.stoppedAt != nil { return .accepted(version: version) }
        let reason = OpenVPNOutput.errorLine(in: trial.lines).map { $0.split(separator: configPath, omittingEmptySubsequences: false).joined(separator: userPath) }
        if trial.timedOut {
            return .refused("CONFIG=\(userPath): OpenVPN did not get to its network within 20 s" + (reason.map { ": \($0)" } ?? ""))
        }
        return .refused("CONFIG=\(userPath): OpenVPN \(trial.status): " + (reason ?? trial.lines.last.map { String(OpenVPNOutput.message($0)) } ?? "no output"))
    }
}

private extension String {
    var trimmed: String {
        var text = Substring(self)
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}
