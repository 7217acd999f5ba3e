import FuzzSupport
import StateMachine

// `remote` extraction from an OpenVPN configuration, then the pins built from it and the answers
// to OpenVPN's `>REMOTE:` queries: nothing traps, and only pinned endpoints are ever let through.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOpenVPNConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = String(decoding: fuzzInput(data, size), as: UTF8.self)
    let remotes = OpenVPNConfigFile.remotes(in: text)
    for remote in remotes {
        invariant(remote.port > 0, "port 0 in \(remote)")
        invariant(!remote.host.isEmpty, "a remote without a host")
        invariant(!remote.host.contains(where: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }),
                  "a host with whitespace: \(remote.host.debugDescription)")
    }
    // Every host name resolves to the same documentation address, so every remote is pinned.
    let names = RemotePins.hostNames(in: remotes)
    let resolved = Dictionary(names.map { ($0, [IPv4Address(192, 0, 2, 99)]) }, uniquingKeysWith: { first, _ in first })
    var pins = RemotePins(remotes: remotes, resolved: resolved)
    for remote in remotes {
        let answer = pins.answer(host: remote.host, port: remote.port, proto: remote.transport.rawValue)
        switch answer {
        case .accept:
            invariant(remote.endpoint.map(pins.endpoints.contains) == true, "accepted unpinned \(remote)")
        case .modify(let address, let port):
            invariant(pins.endpoints.contains(Endpoint(address: address, port: port, transport: remote.transport)),
                      "modified \(remote) to an unpinned \(address):\(port)")
        case .skip:
            break
        }
    }
    return 0
}

runLibFuzzer(fuzzOpenVPNConfig)
