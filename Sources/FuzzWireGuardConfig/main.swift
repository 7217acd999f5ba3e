import FuzzSupport
import StateMachine

// The wg-quick parser, then what vpnsup builds from an accepted file: nothing traps; no error or
// note ever shows a key (nor 20 characters of one); an accepted file round-trips its peers through
// its wg-quick text, is detected as WireGuard, pins IPv4 endpoints only, names no prefix twice,
// and its UAPI request prints no secret.

private let base64Alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=".unicodeScalars)

/// Every 20-character window of the input's runs of base64 characters: what could be (part of)
/// a key.
private func keyWindows(_ text: String) -> Set<Substring> {
    var windows = Set<Substring>()
    var runStart: String.Index?
    var index = text.startIndex
    func close(at end: String.Index) {
        guard let start = runStart else { return }
        let run = text[start..<end]
        if run.unicodeScalars.count >= 20 {
            let scalars = run.unicodeScalars
            var from = scalars.startIndex
            var to = scalars.index(from, offsetBy: 20)
            while true {
                windows.insert(Substring(scalars[from..<to]))
                guard to < scalars.endIndex else { break }
                from = scalars.index(after: from)
                to = scalars.index(after: to)
            }
        }
        runStart = nil
    }
    while index < text.endIndex {
        let scalar = text.unicodeScalars[index]
        if base64Alphabet.contains(scalar) {
            if runStart == nil { runStart = index }
        } else {
            close(at: index)
        }
        index = text.unicodeScalars.index(after: index)
    }
    close(at: text.endIndex)
    return windows
}

/// Whether `message` holds one of `windows`.
private func leaks(_ message: String, _ windows: Set<Substring>) -> Bool {
    guard !windows.isEmpty else { return false }
    let scalars = message.unicodeScalars
    guard scalars.count >= 20 else { return false }
    var from = scalars.startIndex
    var to = scalars.index(from, offsetBy: 20)
    while true {
        if windows.contains(Substring(scalars[from..<to])) { return true }
        guard to < scalars.endIndex else { return false }
        from = scalars.index(after: from)
        to = scalars.index(after: to)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWireGuardConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = String(decoding: fuzzInput(data, size), as: UTF8.self)
    let runs = keyWindows(text)
    _ = TunnelKind.detect(in: text)
    if let address = IPv6Address(text) {
        invariant(IPv6Address(address.description) == address, "\(text.debugDescription) -> \(address) does not parse back")
    }

    let configuration: WireGuardConfiguration
    do {
        configuration = try WireGuardConfiguration(text: text, path: "/config/wg0.conf")
    } catch {
        let message = error.description
        invariant(!message.contains("\n"), "a message of several lines: \(message.debugDescription)")
        invariant(message.hasPrefix("CONFIG=/config/wg0.conf"), "a message not naming the file: \(message)")
        invariant(!leaks(message, runs), "a key in the message: \(message)")
        return 0
    }
    for note in configuration.notes {
        invariant(!leaks(note, runs), "a key in a note: \(note)")
        invariant(!note.contains("\n"), "a note of several lines: \(note.debugDescription)")
    }
    invariant(TunnelKind.detect(in: text) == .wireguard, "an accepted wg-quick file detected as OpenVPN")
    invariant(!configuration.ipv4Addresses.isEmpty, "accepted without an IPv4 Address")
    invariant(!configuration.peers.isEmpty, "accepted without a peer")

    // The wg-quick text parses back to the same peers and interface.
    guard let again = try? WireGuardConfiguration(text: configuration.wgQuickText, path: "/config/wg0.conf") else {
        invariant(false, "its own wg-quick text is refused:\n\(configuration.wgQuickText)")
        return 0
    }
    invariant(again.peers == configuration.peers, "peers differ after a round trip")
    invariant(again.privateKey == configuration.privateKey && again.addresses == configuration.addresses
              && again.dnsServers == configuration.dnsServers && again.mtu == configuration.mtu
              && again.listenPort == configuration.listenPort, "the interface differs after a round trip")

    var owners: [WireGuardPrefix: Int] = [:]
    for (index, peer) in configuration.peers.enumerated() {
        if case .v6 = peer.endpoint.host { invariant(false, "an IPv6 endpoint was accepted: \(peer.endpoint)") }
        invariant(peer.endpoint.port > 0, "port 0 accepted")
        for prefix in peer.allowedIPs {
            if let other = owners[prefix], other != index { invariant(false, "\(prefix) belongs to two peers") }
            owners[prefix] = index
        }
    }

    // Every name resolves to one documentation address: only pinned endpoints are configured.
    let names = RemotePins.hostNames(in: configuration.remotes)
    let resolved = Dictionary(names.map { ($0, [IPv4Address(192, 0, 2, 99)]) }, uniquingKeysWith: { first, _ in first })
    let pins = RemotePins(remotes: configuration.remotes, resolved: resolved)
    let endpoints = configuration.peerEndpoints(pins: pins, attempt: size)
    invariant(endpoints.count == configuration.peers.count, "a peer without an endpoint")
    for endpoint in endpoints.values {
        invariant(pins.endpoints.contains(endpoint), "unpinned endpoint \(endpoint)")
    }
    let request = WireGuardUAPIRequest.device(configuration, endpoints: endpoints, fwmark: Configuration.transportMark)
    invariant(!request.description.contains(configuration.privateKey.key.hex), "the private key in a request's description")
    for peer in configuration.peers {
        if let psk = peer.presharedKey { invariant(!request.description.contains(psk.key.hex), "a preshared key in a request's description") }
    }
    return 0
}

runLibFuzzer(fuzzWireGuardConfig)
