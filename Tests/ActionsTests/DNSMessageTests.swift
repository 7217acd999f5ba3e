import StateMachine
import Testing
@testable import Actions

// MARK: - Building answers byte by byte

private func u16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }

private func wireName(_ name: String) -> [UInt8] {
    name.split(separator: ".").flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) } + [0]
}

/// A response header: id, flags (QR set, plus `flags`), the four counts.
private func header(id: UInt16, flags: UInt16 = 0x0180, questions: UInt16 = 1, answers: UInt16) -> [UInt8] {
    u16(id) + u16(0x8000 | flags) + u16(questions) + u16(answers) + u16(0) + u16(0)
}

private func question(_ name: String, type: UInt16 = 1) -> [UInt8] { wireName(name) + u16(type) + u16(1) }

/// A resource record whose owner is the name at `pointer` (compression) or spelled out.
private func record(owner: [UInt8], type: UInt16, rrClass: UInt16 = 1, data: [UInt8]) -> [UInt8] {
    owner + u16(type) + u16(rrClass) + [0, 0, 0x0e, 0x10] + u16(UInt16(data.count)) + data
}

private func pointer(_ offset: Int) -> [UInt8] { [0xc0 | UInt8(offset >> 8), UInt8(offset & 0xff)] }

/// The question's name starts right after the 12-byte header.
private let questionName = pointer(12)

@Suite struct DNSMessageTests {
    @Test func queryIsByteExact() {
        let query = DNSMessage.query(id: 0x1234, name: "vpn.lab.test")
        #expect(query == [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
            3, 0x76, 0x70, 0x6e, 3, 0x6c, 0x61, 0x62, 4, 0x74, 0x65, 0x73, 0x74, 0,
            0, 1, 0, 1,
        ])
        #expect(DNSMessage.query(id: 0x1234, name: "vpn.lab.test.") == query, "a trailing dot names the same name")
    }

    @Test(arguments: ["", ".", "a..b", ".a", String(repeating: "x", count: 64) + ".test",
                      Array(repeating: String(repeating: "y", count: 63), count: 4).joined(separator: ".") + ".z"])
    func queryRefusesWhatIsNotADNSName(name: String) {
        #expect(DNSMessage.query(id: 1, name: name) == nil)
    }

    @Test func longestNamesAreEncoded() {
        let label63 = String(repeating: "a", count: 63)
        #expect(DNSMessage.query(id: 1, name: label63 + ".test") != nil)
        // 3 × 64 + 62 + 1 = 255 bytes on the wire: the maximum.
        let name = [label63, label63, label63, String(repeating: "b", count: 61)].joined(separator: ".")
        #expect(DNSMessage.encode(name)?.count == 255)
    }

    @Test func answerWithCompressedOwners() {
        let bytes = header(id: 7, answers: 2) + question("vpn.lab.test")
            + record(owner: questionName, type: 1, data: [198, 51, 100, 1])
            + record(owner: questionName, type: 1, data: [198, 51, 100, 2])
        let response = DNSMessage.response(bytes, id: 7, name: "vpn.lab.test")
        #expect(response == DNSResponse(truncated: false, responseCode: 0,
                                        addresses: [IPv4Address(198, 51, 100, 1), IPv4Address(198, 51, 100, 2)]))
    }

    @Test func cnameChainIsFollowedAndStrangersIgnored() {
        // vpn.example.com CNAME edge.cdn.test, whose A record names its owner by a pointer into
        // the CNAME's data; plus an A record for an unrelated owner, which is not the name's.
        var bytes = header(id: 9, answers: 3) + question("vpn.example.com")
        let cnameData = [4] + Array("edge".utf8) + wireName("cdn.test")
        bytes += record(owner: questionName, type: 5, data: cnameData)
        let targetOffset = bytes.count - cnameData.count
        bytes += record(owner: wireName("other.test"), type: 1, data: [203, 0, 113, 99])
        bytes += record(owner: pointer(targetOffset), type: 1, data: [192, 0, 2, 10])
        let response = DNSMessage.response(bytes, id: 9, name: "vpn.example.com")
        #expect(response?.addresses == [IPv4Address(192, 0, 2, 10)])
    }

    @Test func namesCompareCaseInsensitively() {
        // Resolvers may echo the question in another case (DNS 0x20).
        let bytes = header(id: 3, answers: 1) + question("VPN.Lab.Test")
            + record(owner: questionName, type: 1, data: [10, 0, 0, 1])
        #expect(DNSMessage.response(bytes, id: 3, name: "vpn.lab.TEST")?.addresses == [IPv4Address(10, 0, 0, 1)])
    }

    @Test func otherRecordTypesAndClassesAreSkipped() {
        let bytes = header(id: 4, answers: 3) + question("vpn.lab.test")
            + record(owner: questionName, type: 28, data: Array(repeating: 0x20, count: 16)) // AAAA
            + record(owner: questionName, type: 1, rrClass: 3, data: [10, 0, 0, 9])         // CHAOS
            + record(owner: questionName, type: 1, data: [10, 0, 0, 2])
        #expect(DNSMessage.response(bytes, id: 4, name: "vpn.lab.test")?.addresses == [IPv4Address(10, 0, 0, 2)])
    }

    @Test func errorsAndTruncation() {
        let nx = header(id: 5, flags: 0x0183, answers: 0) + question("nope.test")
        #expect(DNSMessage.response(nx, id: 5, name: "nope.test") == DNSResponse(truncated: false, responseCode: 3, addresses: []))
        // An error without the question is still matched by its id.
        let refused = header(id: 6, flags: 0x0105, questions: 0, answers: 0)
        #expect(DNSMessage.response(refused, id: 6, name: "x.test")?.responseCodeName == "REFUSED")
        // Truncated: the (partial) answer section is not read at all.
        let truncated = header(id: 8, flags: 0x0380, answers: 30) + question("big.test")
        #expect(DNSMessage.response(truncated, id: 8, name: "big.test") == DNSResponse(truncated: true, responseCode: 0, addresses: []))
    }

    @Test func answersToAnotherQueryAreNotTaken() {
        let bytes = header(id: 7, answers: 1) + question("vpn.lab.test") + record(owner: questionName, type: 1, data: [1, 2, 3, 4])
        #expect(DNSMessage.response(bytes, id: 8, name: "vpn.lab.test") == nil, "another id")
        #expect(DNSMessage.response(bytes, id: 7, name: "evil.test") == nil, "another question")
        var query = bytes
        query[2] &= 0x7f
        #expect(DNSMessage.response(query, id: 7, name: "vpn.lab.test") == nil, "not a response (QR clear)")
        let aaaa = header(id: 7, answers: 0) + question("vpn.lab.test", type: 28)
        #expect(DNSMessage.response(aaaa, id: 7, name: "vpn.lab.test") == nil, "another question type")
        let noQuestion = header(id: 7, questions: 0, answers: 1) + record(owner: wireName("vpn.lab.test"), type: 1, data: [1, 2, 3, 4])
        #expect(DNSMessage.response(noQuestion, id: 7, name: "vpn.lab.test") == nil, "a success must echo the question")
    }

    @Test func malformedAnswersAreRejectedNotTrapped() {
        let good = header(id: 2, answers: 1) + question("vpn.lab.test") + record(owner: questionName, type: 1, data: [1, 2, 3, 4])
        #expect(DNSMessage.response(good, id: 2, name: "vpn.lab.test") != nil)
        for length in 0..<good.count {
            #expect(DNSMessage.response(Array(good.prefix(length)), id: 2, name: "vpn.lab.test") == nil, "cut at \(length)")
        }
        // A pointer to itself, and one pointing forwards.
        let loop = header(id: 2, answers: 1) + question("vpn.lab.test") + record(owner: pointer(30), type: 1, data: [1, 2, 3, 4])
        #expect(DNSMessage.response(loop, id: 2, name: "vpn.lab.test") == nil)
        let forward = header(id: 2, answers: 1) + question("vpn.lab.test") + record(owner: pointer(200), type: 1, data: [1, 2, 3, 4])
        #expect(DNSMessage.response(forward, id: 2, name: "vpn.lab.test") == nil)
        // Random bytes after a valid header and question never trap.
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let tail = (0..<Int.random(in: 0...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            _ = DNSMessage.response(header(id: 2, answers: 3) + question("vpn.lab.test") + tail, id: 2, name: "vpn.lab.test")
        }
    }

    /// docs/reliability.md: an answer whose counts and lengths claim more than it holds is not
    /// an answer (the caller keeps waiting for the real one); nothing is read past the datagram.
    @Test func answersThatLieAboutLengthsAreRejected() {
        let name = "vpn.lab.test"
        let start = header(id: 5, answers: 1) + question(name)
        let honest = start + record(owner: questionName, type: 1, data: [192, 0, 2, 1])
        #expect(DNSMessage.response(honest, id: 5, name: name)?.addresses == [IPv4Address(192, 0, 2, 1)])

        // RDLENGTH 200 with four bytes of data.
        var longData = honest
        longData.replaceSubrange((longData.count - 6)..<(longData.count - 4), with: u16(200))
        #expect(DNSMessage.response(longData, id: 5, name: name) == nil, "RDLENGTH past the end")
        // ANCOUNT 3 with one record.
        var moreAnswers = honest
        moreAnswers.replaceSubrange(6..<8, with: u16(3))
        #expect(DNSMessage.response(moreAnswers, id: 5, name: name) == nil, "ANCOUNT past the end")
        // A label length running past the end of the message.
        let cutLabel = header(id: 5, answers: 0) + [3] + Array("vpn".utf8) + [60] + Array("lab".utf8)
        #expect(DNSMessage.response(cutLabel, id: 5, name: name) == nil, "label past the end")
        // A CNAME whose target name is longer than its RDLENGTH says.
        let target = wireName("edge.lab.test")
        var cname = header(id: 5, answers: 1) + question(name) + record(owner: questionName, type: 5, data: target)
        cname.replaceSubrange((cname.count - target.count - 2)..<(cname.count - target.count), with: u16(3))
        #expect(DNSMessage.response(cname, id: 5, name: name) == nil, "CNAME target past its RDLENGTH")
        // An A record of RDLENGTH 3 is not an address (nor is one of 5).
        let short = start + record(owner: questionName, type: 1, data: [192, 0, 2])
        #expect(DNSMessage.response(short, id: 5, name: name)?.addresses == [])
    }

    @Test func judgement() {
        let one = [IPv4Address(192, 0, 2, 1)]
        #expect(Resolver.judge(DNSResponse(truncated: false, responseCode: 0, addresses: one)) == .resolved(one))
        #expect(Resolver.judge(DNSResponse(truncated: false, responseCode: 3, addresses: [])) == .final("no such name (NXDOMAIN)"))
        #expect(Resolver.judge(DNSResponse(truncated: false, responseCode: 0, addresses: []))
            == .final("no IPv4 address (NOERROR without A record)"))
        #expect(Resolver.judge(DNSResponse(truncated: false, responseCode: 2, addresses: [])) == .retry("SERVFAIL"))
        #expect(Resolver.judge(DNSResponse(truncated: false, responseCode: 5, addresses: [])) == .retry("REFUSED"))
    }
}

@Suite struct ResolvConfTests {
    @Test func nameserversInOrderIPv4Only() {
        let text = """
            # Generated by something
            search lab.test
            nameserver 198.51.100.1
            ; nameserver 10.9.9.9
            nameserver\t2001:db8::53
            options edns0 timeout:1
            nameserver 192.0.2.53  # trailing comment
            """
        #expect(ResolvConf.nameservers(in: text) == [IPv4Address(198, 51, 100, 1), IPv4Address(192, 0, 2, 53)])
    }

    @Test func onlyTheFirstThreeCountAsForGlibc() {
        let text = (1...5).map { "nameserver 10.0.0.\($0)" }.joined(separator: "\n")
        #expect(ResolvConf.nameservers(in: text) == (1...3).map { IPv4Address(10, 0, 0, UInt8($0)) })
        let ipv6First = "nameserver ::1\nnameserver fe80::1\nnameserver 2001:db8::1\nnameserver 10.0.0.1\n"
        #expect(ResolvConf.nameservers(in: ipv6First) == [], "the IPv4 server is the fourth: glibc never asks it")
    }

    @Test func noNameserverMeansTheLocalHost() {
        #expect(ResolvConf.nameservers(in: "") == [IPv4Address(127, 0, 0, 1)])
        #expect(ResolvConf.nameservers(in: "search example.com\noptions ndots:2\n") == [IPv4Address(127, 0, 0, 1)])
    }

    @Test func dockerEmbeddedDNSAndDuplicates() {
        #expect(ResolvConf.nameservers(in: "nameserver 127.0.0.11\nnameserver 127.0.0.11\r\noptions ndots:0\n")
            == [IPv4Address(127, 0, 0, 11)])
    }
}
