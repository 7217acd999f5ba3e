import Actions
import ArgumentParser
import FoundationEssentials
import StateMachine

/// `vpnsup host-rules`: the host's DOCKER-USER rules for a router container on an `--internal`
/// network, printed, installed (`--apply`, idempotent) or removed (`--remove`).
struct HostRules: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host-rules",
        abstract: "Print, install (--apply) or remove (--remove) the host's DOCKER-USER rules an --internal network needs.",
        discussion: """
            Run on the Docker host, not in the container. Docker drops what enters or leaves an \
            internal network's bridge for another subnet, so the LAN containers' traffic to their \
            router (on the same bridge) never arrives. These two rules let exactly that through, for \
            that bridge only. --apply adds whichever are missing (through iptables, which Docker's \
            own firewall uses, iptables-nft or legacy) and is idempotent; the rules do not survive \
            a reboot: run it from the host's start-up (packaging/systemd/vpnsup-host-rules@.service).
            """
    )

    @Option(help: "The Docker network (its subnet and bridge are read with docker network inspect).")
    var network: String?
    @Option(help: "The internal network's subnet, e.g. 172.22.0.0/24 (instead of --network, or overriding it).")
    var subnet: String?
    @Option(help: "The network's Linux bridge, e.g. underbridge or br-0123456789ab (instead of --network, or overriding it).")
    var bridge: String?
    @Flag(help: "Install the rules that are missing.")
    var apply = false
    @Flag(help: "Remove the rules.")
    var remove = false

    mutating func run() async throws { try await execute() }

    func execute() async throws {
        if apply && remove { fail("--apply and --remove exclude each other", code: 64) }
        var subnetText = subnet
        var bridgeName = bridge
        if let network {
            let inspected = inspect(network)
            subnetText = subnetText ?? inspected.subnet
            bridgeName = bridgeName ?? inspected.bridge
        }
        guard let subnetText, let bridgeName else {
            fail("give --network NAME, or --subnet CIDR and --bridge NAME", code: 64)
        }
        let rules: DockerHostRules
        do {
            rules = try DockerHostRules(subnet: DockerHostRules.subnet(subnetText), bridge: bridgeName)
        } catch {
            fail(error.description, code: StateMachine.ExitCode.configuration)
        }
        if !apply && !remove {
            print(rules.restoreText, terminator: "")
            return
        }
        guard iptables(["-w", "-n", "-L", DockerHostRules.chain]).status == .exited(0) else {
            fail("the host has no \(DockerHostRules.chain) chain: is Docker running with its iptables firewall? "
                 + "(Docker's nftables firewall backend has no such chain and is not supported)", code: 69)
        }
        var changed = 0
        for rule in rules.rules {
            var present = iptables(["-w", "-C", DockerHostRules.chain] + rule).status == .exited(0)
            if apply && !present {
                try run(["-w", "-I", DockerHostRules.chain, "1"] + rule)
                changed += 1
            }
            while remove && present {
                try run(["-w", "-D", DockerHostRules.chain] + rule)
                changed += 1
                present = iptables(["-w", "-C", DockerHostRules.chain] + rule).status == .exited(0)
            }
        }
        let verb = apply ? "added" : "removed"
        print("\(DockerHostRules.chain) for \(rules.subnet) on \(rules.bridge): \(verb) \(changed) rule(s), "
              + "\(apply ? rules.rules.count - changed : 0) already present")
    }

    private struct NetworkInspection: Decodable {
        struct IPAM: Decodable {
            struct Pool: Decodable {
                var Subnet: String?
            }
            var Config: [Pool]?
        }
        var Id: String
        var Driver: String?
        var Internal: Bool?
        var Options: [String: String]?
        var IPAM: IPAM?
    }

    /// The network's IPv4 subnet and bridge, as Docker reports them.
    private func inspect(_ network: String) -> (subnet: String?, bridge: String) {
        let result: CapturedRun
        do {
            result = try Spawner.capture(executable: "docker", arguments: ["network", "inspect", "--", network],
                                         environment: ProcessInfo.processInfo.environment)
        } catch {
            fail("--network \(network): docker cannot be run: \(error)", code: 69)
        }
        guard result.status == .exited(0),
              let inspected = try? JSONDecoder().decode([NetworkInspection].self, from: Data(result.output.utf8)),
              let first = inspected.first else {
            let why = result.errorOutput.split(separator: "\n").first.map(String.init) ?? "\(result.status)"
            fail("--network \(network): docker network inspect failed: \(why)", code: 69)
        }
        guard first.Driver == nil || first.Driver == "bridge" else {
            fail("--network \(network) uses the \(first.Driver!) driver; only bridge networks have a host bridge", code: StateMachine.ExitCode.configuration)
        }
        if first.Internal == false {
            StandardError.writeLine("vpnsup host-rules: warning: --network \(network) is not --internal; its containers can reach out without the router")
        }
        let subnet = first.IPAM?.Config?.compactMap(\.Subnet).first { IPv4Interface($0) != nil }
        let bridge = first.Options?["com.docker.network.bridge.name"] ?? "br-" + first.Id.prefix(12)
        return (subnet, bridge)
    }

    private func iptables(_ arguments: [String]) -> CapturedRun {
        (try? Spawner.capture(executable: "iptables", arguments: arguments, environment: ProcessInfo.processInfo.environment))
            ?? CapturedRun(status: .exited(127), output: "", errorOutput: "iptables cannot be run")
    }

    private func run(_ arguments: [String]) throws {
        let result = iptables(arguments)
        guard result.status == .exited(0) else {
            fail("iptables \(arguments.joined(separator: " ")): \(result.status): \(result.errorOutput)", code: 71)
        }
    }

    private func fail(_ message: String, code: Int32) -> Never {
        StandardError.writeLine("vpnsup host-rules: \(message)")
        Termination.exit(code)
    }
}
