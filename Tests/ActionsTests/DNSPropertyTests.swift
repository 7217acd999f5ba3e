import PropertyBased
import StateMachine
import Testing
@testable import Actions

// Property tests of the DNS codec: answers built from random names, ids and addresses decode to
// exactly what was put in; bytes that are not such an answer (random, cut, flipped) never trap
// and are never taken for another query's answer.

private let labelGen = zip(Gen.lowercaseLetter.string(of: 1...12), Gen.int(in: 0...99)).map { "\($0)\($1)" }
private let nameGen = labelGen.array(of: 1...5).map { $0.joined(separator: ".") }
private let addressGen = Gen.uint32(in: 0...UInt32.max).map(IPv4Address.init)
private let answerGen = zip(nameGen, Gen.uint16(in: 0...UInt16.max), addressGen.array(of: 0...8), Gen.bool)

private func u16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }

/// The server's answer to `query`: the query with QR set and `addresses` as A records whose owner
/// points back at the question (compression), spelled in upper case when `shout`.
private func answer(to query: [UInt8], name: String, addresses: [IPv4Address], shout: Bool) -> [UInt8] {
    var bytes = query
    bytes[2] |= 0x80
    bytes[6...7] = u16(UInt16(addresses.count))[...]
    for (index, address) in addresses.enumerated() {
        // Every other record spells its owner out (in the other case) instead of pointing.
        let owner: [UInt8] = index % 2 == 0 ? [0xc0, 12]
            : (shout ? name.uppercased() : name).split(separator: ".").flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) } + [0]
        bytes += owner + u16(1) + u16(1) + [0, 0, 1, 0] + u16(4)
        bytes += [UInt8(address.value >> 24), UInt8(address.value >> 16 & 0xff), UInt8(address.value >> 8 & 0xff), UInt8(address.value & 0xff)]
    }
    return bytes
}

@Suite struct DNSPropertyTests {
    @Test func answersDecodeToWhatWasPutIn() async {
        await propertyCheck(count: 500, input: answerGen) { name, id, addresses, shout in
            let query = DNSMessage.query(id: id, name: name)!
            #expect(query.count == 12 + DNSMessage.encode(name)!.count + 4)
            #expect(Array(query[0..<2]) == u16(id))
            let bytes = answer(to: query, name: name, addresses: addresses, shout: shout)
            let response = DNSMessage.response(bytes, id: id, name: shout ? name.uppercased() : name)
            #expect(response == DNSResponse(truncated: false, responseCode: 0, addresses: addresses))
        }
    }

    @Test func anotherIDOrNameIsNeverTaken() async {
        await propertyCheck(count: 300, input: zip(answerGen, nameGen)) { given, other in
            let (name, id, addresses, shout) = given
            let bytes = answer(to: DNSMessage.query(id: id, name: name)!, name: name, addresses: addresses, shout: shout)
            #expect(DNSMessage.response(bytes, id: id &+ 1, name: name) == nil)
            if other.lowercased() != name.lowercased() {
                #expect(DNSMessage.response(bytes, id: id, name: other) == nil)
            }
        }
    }

    /// Cut anywhere, an answer is rejected or decodes to a prefix of its records, never traps.
    @Test func cutAnswersNeverTrap() async {
        await propertyCheck(count: 300, input: zip(answerGen, Gen.int(in: 0...400))) { given, cut in
            let (name, id, addresses, shout) = given
            let bytes = answer(to: DNSMessage.query(id: id, name: name)!, name: name, addresses: addresses, shout: shout)
            let prefix = Array(bytes.prefix(cut))
            if let response = DNSMessage.response(prefix, id: id, name: name) {
                #expect(prefix.count == bytes.count, "a cut answer that still counts all its records cannot decode")
                #expect(response.addresses == addresses)
            }
        }
    }

    /// Random bytes, and answers with a random byte changed (lengths that lie, pointers that
    /// loop or point past the end), never trap.
    @Test func garbageNeverTraps() async {
        let garbage = Gen.uint8(in: 0...255).array(of: 0...600)
        await propertyCheck(count: 500, input: zip(garbage, Gen.uint16(in: 0...UInt16.max))) { bytes, id in
            _ = DNSMessage.response(bytes, id: id, name: "vpn.example")
        }
        let flip = zip(answerGen, Gen.int(in: 0...10_000), Gen.uint8(in: 0...255))
        await propertyCheck(count: 500, input: flip) { given, position, value in
            let (name, id, addresses, shout) = given
            var bytes = answer(to: DNSMessage.query(id: id, name: name)!, name: name, addresses: addresses, shout: shout)
            bytes[position % bytes.count] = value
            if let response = DNSMessage.response(bytes, id: id, name: name) {
                #expect(response.addresses.count <= max(addresses.count, 255))
            }
        }
    }
}
