import FuzzSupport
import StateMachine

// An OpenVPN configuration through the vetting, the remote plan, the pins and the answers to
// OpenVPN's `>REMOTE:` queries. Besides not trapping: the vetted text holds nothing that runs a
// program or loads code (read back as OpenVPN reads it, `<connection>` blocks included), it reads
// back as the profiles vpnsup vetted, vetting it again changes nothing, and only pinned endpoints
// are ever let through.

private func names(_ options: [OpenVPNOption]) -> [String] {
    options.flatMap { [$0.name] + names($0.connection ?? []) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOpenVPNConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = String(decoding: fuzzInput(data, size), as: UTF8.self)
    let vetted = OpenVPNConfigVetting.vet(text, path: "/fuzz.ovpn")
    if vetted.refusal == nil {
        guard case .success(let options) = OpenVPNConfigSyntax.parse(vetted.text) else {
            invariant(false, "the vetted text does not parse: \(vetted.text.debugDescription)")
            return 0
        }
        let passed = Set(names(options))
        invariant(passed.isDisjoint(with: OpenVPNConfigVetting.neverPassed),
                  "the vetted text holds \(passed.intersection(OpenVPNConfigVetting.neverPassed))")
        for option in options where option.name == "providers" {
            invariant(option.arguments.allSatisfy(OpenVPNConfigVetting.builtInProviders.contains), "providers \(option.arguments)")
        }
        invariant(OpenVPNConfigFile.connectionProfiles(of: options) == vetted.profiles, "the vetted text reads back as other profiles")
        let again = OpenVPNConfigVetting.vet(vetted.text, path: "/fuzz.ovpn")
        invariant(again.text == vetted.text && again.findings.isEmpty, "vetting the vetted text changed it: \(again.findings)")
    } else {
        invariant(vetted.text.isEmpty, "a refused configuration with text for OpenVPN")
    }

    let plan = RemotePlan(vetted)
    let remotes = plan.remotes
    for remote in remotes {
        invariant(remote.port > 0, "port 0 in \(remote)")
        invariant(!remote.host.isEmpty, "a remote without a host")
        invariant(remote.family != .ipv6 && !remote.host.contains(":"), "an IPv6-only remote in the plan: \(remote)")
    }
    // Every host name resolves to the same documentation address, so every remote is pinned.
    let names = RemotePins.hostNames(in: remotes)
    let resolved = Dictionary(names.map { ($0, [IPv4Address(192, 0, 2, 99)]) }, uniquingKeysWith: { first, _ in first })
    var pins = RemotePins(remotes: remotes, resolved: resolved)
    for entry in plan.entries {
        guard let port = entry.profile.portNumber else { continue }
        let answer = pins.answer(host: entry.profile.host, port: port, proto: entry.profile.proto.description)
        switch answer {
        case .accept:
            invariant(entry.remote?.endpoint.map(pins.endpoints.contains) == true, "accepted unpinned \(entry)")
        case .modify(let address, let port):
            invariant(pins.endpoints.contains(Endpoint(address: address, port: port, transport: entry.profile.proto.transport)),
                      "modified \(entry) to an unpinned \(address):\(port)")
        case .skip:
            break
        }
    }
    return 0
}

runLibFuzzer(fuzzOpenVPNConfig)
