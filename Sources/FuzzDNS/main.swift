import Actions
import FuzzSupport
import StateMachine

// The DNS codec: arbitrary bytes as the answer to one A query (the id from the first two bytes,
// the name fixed), and the input as a name to encode, and as resolv.conf.

private let askedName = "vpn.example.com"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDNS(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    let id = bytes.count >= 2 ? UInt16(bytes[0]) << 8 | UInt16(bytes[1]) : 0
    if let response = DNSMessage.response(bytes, id: id, name: askedName) {
        invariant(Set(response.addresses).count == response.addresses.count, "duplicate addresses in \(response)")
        if response.truncated { invariant(response.addresses.isEmpty, "a truncated answer gave addresses") }
        // Each A record takes 15 bytes at least (a root owner name, type, class, TTL, length, data).
        invariant(12 + response.addresses.count * 15 <= bytes.count, "more addresses than the answer can hold")
    }

    let text = String(decoding: bytes, as: UTF8.self)
    if let query = DNSMessage.query(id: id, name: text) {
        invariant(query.count <= 12 + 255 + 4, "a query of \(query.count) bytes")
        invariant(DNSMessage.response(query, id: id, name: text) == nil, "a query was taken for its own answer")
    }
    let servers = ResolvConf.nameservers(in: text)
    invariant(servers.count <= ResolvConf.maximumNameservers, "\(servers.count) nameservers")
    return 0
}

runLibFuzzer(fuzzDNS)
