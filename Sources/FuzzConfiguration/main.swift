import FuzzSupport
import StateMachine
import Watchers

// The configuration parsers: lines of NAME=VALUE laid over a minimal valid configuration, and the
// whole input given to each value parser and to the credentials parser. Whatever is accepted must
// be usable: a LAN with room, forwards inside it, interface names nft can quote, credentials that
// cannot inject a management command.

private let lan = IPv4Network(containing: IPv4Address(172, 22, 0, 1), prefixLength: 24)
private let exampleEndpoint = Endpoint(address: IPv4Address(192, 0, 2, 1), port: 1194, transport: .udp)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfiguration(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = String(decoding: fuzzInput(data, size), as: UTF8.self)

    var values = ["CONFIG": "client.ovpn", "IP_ADDR": "172.22.0.1/24"]
    for line in text.split(separator: "\n") {
        guard let equals = line.firstIndex(of: "=") else { continue }
        values[String(line[..<equals])] = String(line[line.index(after: equals)...])
    }
    if let configuration = try? Configuration(values) {
        check(configuration)
    }

    if let address = IPv4Address(text) {
        invariant(address.description == text, "\(text.debugDescription) parsed as \(address), not its own text")
    }
    if let interface = IPv4Interface(text) {
        invariant(interface.description == text, "\(text.debugDescription) parsed as \(interface), not its own text")
    }
    if let name = try? Configuration.interfaceName("LAN_IF", text) {
        checkInterfaceName(name)
    }
    if let forwards = try? Configuration.portForwards(text, lan: lan) {
        checkForwards(forwards, lan: lan)
    }
    if let credentials = try? Credentials(fileContents: text, path: "/c") {
        for field in [credentials.username, credentials.password] {
            invariant(!field.isEmpty, "an empty credential was accepted")
            invariant(managementQuoted(field) != nil, "accepted credential cannot be sent: \(field.debugDescription)")
        }
    }
    return 0
}

private func check(_ configuration: Configuration) {
    let gateway = configuration.gateway
    invariant((1...30).contains(gateway.prefixLength), "prefix /\(gateway.prefixLength) accepted")
    let network = gateway.network
    invariant(gateway.address != network.address && gateway.address.value != network.address.value | ~network.mask,
              "\(gateway) is its subnet's network or broadcast address")
    checkInterfaceName(configuration.lanInterface)
    checkInterfaceName(configuration.wanInterface)
    invariant(configuration.lanInterface != configuration.wanInterface, "LAN_IF == WAN_IF accepted")
    invariant(configuration.openvpnConfigPath.hasPrefix("/"), "relative CONFIG path \(configuration.openvpnConfigPath)")
    checkForwards(configuration.portForwards, lan: network)
    if let interval = configuration.probe.interval {
        invariant(configuration.probe.timeout < interval, "probe timeout not shorter than its interval")
    }
    if let listen = configuration.metricsListen {
        // Metrics are never served on the WAN.
        invariant(listen.isLoopback || listen.address == gateway.address, "METRICS_LISTEN \(listen) accepted")
        invariant(listen.port > 0, "METRICS_LISTEN port 0 accepted")
        invariant((configuration.layout(endpoints: []).metricsPort != nil) == (listen.address == gateway.address),
                  "METRICS_LISTEN \(listen) admitted by the ruleset unlike its address")
    }
    for policy in FirewallPolicy.allCases {
        let text = Ruleset.build(policy, for: configuration.layout(endpoints: [exampleEndpoint])).nftText
        for line in text.split(separator: "\n") {
            // Names are written in double quotes; an odd count means one ended a quote early.
            invariant(line.filter { $0 == "\"" }.count % 2 == 0, "unbalanced quotes in nft text: \(line)")
        }
    }
}

private func checkInterfaceName(_ name: String) {
    invariant((1...15).contains(name.utf8.count), "interface name of \(name.utf8.count) bytes: \(name.debugDescription)")
    invariant(!name.unicodeScalars.contains { $0.value <= 0x20 || $0 == "/" || $0 == ":" },
              "interface name with a separator: \(name.debugDescription)")
}

private func checkForwards(_ forwards: [PortForward], lan: IPv4Network) {
    var seen = Set<String>()
    for forward in forwards {
        invariant(lan.contains(forward.target), "\(forward) targets outside \(lan)")
        invariant(forward.publicPort > 0 && forward.targetPort > 0, "port 0 in \(forward)")
        invariant(seen.insert("\(forward.publicPort)/\(forward.transport)").inserted, "\(forward) forwarded twice")
    }
}

runLibFuzzer(fuzzConfiguration)
