import Foundation
import Testing
@testable import vpnsup

/// PORT_FWD_FILE through the command line: 10,000 forwards, which no environment variable or
/// argument can carry (the kernel's limit for one string is 128 KiB), from a file into the ruleset
/// `vpnsup rules` prints, which `nft -f` then loads (in a namespace of its own).
@Suite(.enabled(if: isolatedRoot))
struct PortForwardFileCommandTests {
    @Test func tenThousandForwardsFromAFileLoadWithNft() throws {
        let directory = try RunCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        var lines = ["# 10,000 forwards: TCP and UDP, public ports 20000-29999"]
        for index in 0..<10_000 {
            lines.append("\(20_000 + index):172.22.\(index / 250).\(index % 250 + 2):\(1024 + index)/\(index % 3 == 0 ? "udp" : "tcp")")
        }
        let file = directory.appendingPathComponent("forwards")
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        let environment = RunCommandTests.environment(directory, ["IP_ADDR": "172.22.0.1/16", "PORT_FWD_FILE": file.path])

        let printed = try execute(vpnsupBinary(), ["rules", "--state", "TunnelUp"], environment: environment)
        #expect(printed.status == 0, "\(printed.stderr)")
        #expect(printed.stdout.contains("29999 : 172.22.39.251 . 11023"), "the last line's forward is in the ruleset")
        let ruleset = directory.appendingPathComponent("up.nft")
        try printed.stdout.write(to: ruleset, atomically: true, encoding: .utf8)
        let loaded = try execute("/usr/bin/unshare", ["--net", "--", "/bin/sh", "-c",
                                                      "nft -f \"$1\" && nft list map inet vpnsup tcp_forwards && nft list map inet vpnsup udp_forwards",
                                                      "sh", ruleset.path])
        #expect(loaded.status == 0, "\(loaded.stderr)")
        let elements = loaded.stdout.split(whereSeparator: { $0 == "," || $0 == "{" || $0 == "\n" })
            .filter { $0.contains(" : 172.22.") }
        #expect(elements.count == 10_000, "nft lists every forward of the file")

        // A bad line: exit 78, one line naming the file and the line.
        try (lines.joined(separator: "\n") + "\n8080:10.0.0.5:80\n").write(to: file, atomically: true, encoding: .utf8)
        let refused = try execute(vpnsupBinary(), ["rules", "--state", "TunnelUp"], environment: environment)
        #expect(refused.status == 78)
        #expect(refused.stderr == "PORT_FWD_FILE=\(file.path):10002 has '8080:10.0.0.5:80', which targets 10.0.0.5, outside the LAN 172.22.0.0/16\n")
    }
}
