import Foundation
import Glibc
import Testing
@testable import vpnsup

/// docs/reliability.md rows 59-79: a bad wg-quick file or WireGuard variable given to `vpnsup run`,
/// each in a network namespace of its own, ends with exit 78, one stderr line naming the input
/// (never a key), and the lockdown table committed. And a good file runs: wireguard-go under
/// vpnsup, the peer's endpoint pinned, SIGTERM stops both.
@Suite(.enabled(if: isolatedRoot))
struct WireGuardRunTests {
    static let privateKey = "uEmRqDCNdFzEiBppUwZNb47aJ9HeQPe2ZO2H9uNeans="
    static let serverKey = "J68c2AbcNDB/VyrU3oQQ/DX4N+TqGoUlfEIWhpC7TxU="
    static let otherKey = "Yz0xibsLJzUhP/CuwrRiMkrU88HSWxdRbSuw0x3upXY="

    /// A valid file with `interface` and `peer` lines appended to its sections.
    static func file(interface: [String] = [], peer: [String] = []) -> String {
        (["[Interface]", "PrivateKey = \(privateKey)", "Address = 10.9.0.2/32"] + interface
            + ["[Peer]", "PublicKey = \(serverKey)", "Endpoint = 198.51.100.1:51820", "AllowedIPs = 0.0.0.0/0"] + peer)
            .joined(separator: "\n") + "\n"
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var row: Int
        var name: String
        var text: String = WireGuardRunTests.file()
        var variables: [String: String] = [:]
        /// The expected stderr line; `<file>` stands for the file's path.
        var line: String

        var testDescription: String { "row \(row): \(name)" }
    }

    static let cases: [Case] = [
        Case(row: 59, name: "a private key that is not one", text: file().replacingOccurrences(of: privateKey, with: "abc"),
             line: "CONFIG=<file>:2 has a PrivateKey that is not a key (base64 of 32 bytes: 44 characters ending in '=')"),
        Case(row: 60, name: "a private key of zeros", text: file().replacingOccurrences(of: privateKey, with: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
             line: "CONFIG=<file>:2 has a PrivateKey of zeros, which WireGuard takes as no key"),
        Case(row: 61, name: "a key pasted as a line of its own", text: file(interface: [otherKey]),
             line: "CONFIG=<file>:4 has a key without a value"),
        Case(row: 62, name: "a section of another name", text: file(interface: ["[Tunnel]"]),
             line: "CONFIG=<file>:4 has a section other than [Interface] or [Peer]"),
        Case(row: 63, name: "an unknown key", text: file(interface: ["Jc = 4"]),
             line: "CONFIG=<file>:4 has an unknown key Jc in [Interface]"),
        Case(row: 64, name: "a key set twice", text: file(interface: ["PrivateKey = \(otherKey)"]),
             line: "CONFIG=<file>:4 sets PrivateKey twice in [Interface]"),
        Case(row: 65, name: "no IPv4 Address", text: file().replacingOccurrences(of: "Address = 10.9.0.2/32", with: "Address = fd00::2/128"),
             line: "CONFIG=<file>:1 has no IPv4 Address in [Interface]: the LAN leaves by the tunnel from one"),
        Case(row: 66, name: "a DNS entry that is neither", text: file(interface: ["DNS = 10.0.0"]),
             line: "CONFIG=<file>:4 has a DNS entry that is neither an IP address nor a domain name"),
        Case(row: 67, name: "an MTU out of range", text: file(interface: ["MTU = 500"]),
             line: "CONFIG=<file>:4 has an MTU that is not a number in 576...9000"),
        Case(row: 68, name: "no [Peer]", text: "[Interface]\nPrivateKey = \(privateKey)\nAddress = 10.9.0.2/32\n",
             line: "CONFIG=<file> has no [Peer] section"),
        Case(row: 69, name: "a peer without Endpoint", text: file().replacingOccurrences(of: "Endpoint = 198.51.100.1:51820\n", with: ""),
             line: "CONFIG=<file>:4 has no Endpoint in [Peer]: a router's peer must be reachable, and pinned, at a known address"),
        Case(row: 70, name: "an IPv6 Endpoint",
             text: file().replacingOccurrences(of: "Endpoint = 198.51.100.1:51820", with: "Endpoint = [2001:db8::1]:51820"),
             line: "CONFIG=<file>:4 has the IPv6 Endpoint [2001:db8::1]:51820 in [Peer]: the WAN carries IPv4 only (an IPv4 address or a host name)"),
        Case(row: 71, name: "an Endpoint with port 0",
             text: file().replacingOccurrences(of: "Endpoint = 198.51.100.1:51820", with: "Endpoint = 198.51.100.1:0"),
             line: "CONFIG=<file>:6 has an Endpoint that is not host:port (an IPv4 address, [IPv6 address] or host name; port 1...65535)"),
        Case(row: 72, name: "IPv6 AllowedIPs only", text: file().replacingOccurrences(of: "AllowedIPs = 0.0.0.0/0", with: "AllowedIPs = ::/0"),
             line: "CONFIG=<file> has no IPv4 AllowedIPs in any [Peer]: the LAN's traffic could go nowhere"),
        Case(row: 73, name: "one prefix in two peers",
             text: file() + "\n[Peer]\nPublicKey = \(otherKey)\nEndpoint = 192.0.2.1:1\nAllowedIPs = 10.0.0.0/8, 0.0.0.0/0",
             line: "CONFIG=<file>:9 has the AllowedIPs 0.0.0.0/0 in [Peer] 2, already [Peer] 1's: WireGuard would keep it for one peer only"),
        Case(row: 77, name: "VPN_TYPE neither", variables: ["VPN_TYPE": "WireGuard"],
             line: "VPN_TYPE=WireGuard is not openvpn or wireguard"),
        Case(row: 78, name: "TUNNEL_IF the LAN's", variables: ["TUNNEL_IF": "vsteth1"],
             line: "TUNNEL_IF=vsteth1 is the same interface as LAN_IF"),
        Case(row: 78, name: "TUNNEL_IF too long", variables: ["TUNNEL_IF": "wireguard-router0"],
             line: "TUNNEL_IF=wireguard-router0 is not an interface name: 1 to 15 bytes"),
    ]

    /// A scratch directory with `text` as wg0.conf (0600, as a key file should be), and the
    /// environment naming it.
    static func scratch(_ text: String, _ variables: [String: String]) throws -> (URL, [String: String]) {
        let directory = try RunCommandTests.scratch()
        let file = directory.appendingPathComponent("wg0.conf")
        try text.write(to: file, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file.path)
        var overrides = ["CONFIG": "wg0.conf", "TUNNEL_IF": "vstwg\(getpid() % 100_000)"]
        for (key, value) in variables { overrides[key] = value }
        return (directory, RunCommandTests.environment(directory, overrides))
    }

    @Test(arguments: cases)
    func exits78WithOneLineAndTheLockdownCommitted(_ bad: Case) throws {
        let (directory, environment) = try Self.scratch(bad.text, bad.variables)
        defer { try? FileManager.default.removeItem(at: directory) }
        let tableFile = directory.appendingPathComponent("table")

        let outcome = try runIsolated(["run"], environment: environment, tableTo: tableFile)

        #expect(outcome.status == 78, "\(outcome.stderr)")
        let path = directory.appendingPathComponent("wg0.conf").path
        #expect(outcome.stderr.split(separator: "\n").map(String.init) == [bad.line.replacingOccurrences(of: "<file>", with: path)],
                "a bad configuration gets stderr to itself")
        for key in [Self.privateKey, Self.serverKey, Self.otherKey] {
            #expect(!outcome.stderr.contains(key.prefix(12)), "no key in any message")
        }
        let table = try String(contentsOf: tableFile, encoding: .utf8)
        #expect(table.contains("hook forward priority filter; policy drop;"), "the lockdown stays committed: \(table)")
        #expect(!table.contains("vsteth0"), "the lockdown names no interface but loopback")
    }

    /// Row 79: a TUNNEL_IF whose UAPI socket another process serves (another router's device:
    /// /var/run/wireguard is shared by every namespace) is refused before anything runs, and
    /// the socket is left alone.
    @Test func aTunnelNameInUseOnTheMachineExits78() throws {
        let interface = "vstwgu\(getpid() % 100_000)"
        let path = "/var/run/wireguard/\(interface).sock"
        let listener = try UnixListener(path: path)
        defer { listener.close() }
        let (directory, environment) = try Self.scratch(Self.file(), ["TUNNEL_IF": interface])
        defer { try? FileManager.default.removeItem(at: directory) }

        let outcome = try runIsolated(["run"], environment: environment, tableTo: directory.appendingPathComponent("table"))

        #expect(outcome.status == 78, "\(outcome.stderr)")
        #expect(outcome.stderr.split(separator: "\n").map(String.init)
            == ["TUNNEL_IF=\(interface): \(path) is served by pid \(getpid()): the tunnel interface name must be unique on this machine"])
        #expect(FileManager.default.fileExists(atPath: path), "another router's socket is never removed")
        let table = try String(contentsOf: directory.appendingPathComponent("table"), encoding: .utf8)
        #expect(table.contains("hook forward priority filter; policy drop;"))
    }

    /// A good file runs: the connecting ruleset pins the peer's endpoint (UDP, marked),
    /// wireguard-go runs under vpnsup with its link, without the key in its argv or environment;
    /// SIGTERM ends both, exit 0, the lockdown committed again. A file every user can read is
    /// warned about (it holds the private key).
    @Test func aWireGuardFileRunsAndSIGTERMStopsIt() throws {
        let (directory, environment) = try Self.scratch(Self.file(), [:])
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("wg0.conf")
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file.path)
        let interface = environment["TUNNEL_IF"]!
        let script = """
            ip link set lo up && ip link add vsteth0 type veth peer name vsteth1 || exit 99
            "$VPNSUP" run 2>"$DIR/stderr" & pid=$!
            i=0; until ip link show dev "$TUNNEL_IF" >/dev/null 2>&1 && nft list table inet vpnsup 2>/dev/null | grep -q 'udp dport 51820 accept' || [ $i -ge 200 ]; do
                sleep 0.05; i=$((i+1)); done
            nft list table inet vpnsup > "$DIR/connecting" 2>&1
            ip -o link show dev "$TUNNEL_IF" > "$DIR/link" 2>&1
            wg=$(pgrep -P $pid -x wireguard-go)
            tr '\\0' ' ' < /proc/$wg/cmdline > "$DIR/cmdline"
            cat /proc/$wg/environ /proc/$wg/cmdline > "$DIR/process" 2>&1
            kill -TERM $pid; wait $pid; code=$?
            nft list table inet vpnsup > "$DIR/after" 2>&1
            ip link show dev "$TUNNEL_IF" >/dev/null 2>&1 && echo "link left" >> "$DIR/after"
            kill -0 $wg 2>/dev/null && { echo "wireguard-go left" >> "$DIR/after"; kill -KILL $wg; }
            exit $code
            """
        var scriptEnvironment = environment
        scriptEnvironment["DIR"] = directory.path
        scriptEnvironment["VPNSUP"] = vpnsupBinary()
        scriptEnvironment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        let outcome = try execute("/usr/bin/unshare", ["--net", "--", "/bin/sh", "-c", script], environment: scriptEnvironment)
        func read(_ name: String) -> String { (try? String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)) ?? "" }
        let stderr = read("stderr")
        #expect(outcome.status == 0, "SIGTERM ends vpnsup with 0: \(stderr)")
        #expect(read("connecting").contains("oifname \"vsteth0\" meta mark 0x76706e01 ip daddr 198.51.100.1 udp dport 51820 accept"),
                "the peer's endpoint is pinned, marked: \(read("connecting"))")
        #expect(read("link").contains(interface), "wireguard-go made the link \(interface): \(stderr)")
        #expect(read("cmdline").trimmingCharacters(in: .whitespaces).hasSuffix("-f \(interface)"), "\(read("cmdline"))")
        #expect(!read("process").isEmpty && !read("process").contains(Self.privateKey), "no key in argv or environment")
        #expect(read("after").contains("hook forward priority filter; policy drop;"), "the lockdown after SIGTERM: \(read("after"))")
        #expect(!read("after").contains("link left") && !read("after").contains("wireguard-go left"), "\(read("after"))")
        #expect(stderr.contains("CONFIG=\(file.path) holds a private key and is readable by every user (mode 0644): chmod 600 it"), "\(stderr)")
        #expect(!stderr.contains(Self.privateKey))
    }
}

/// A listening Unix socket: another router's UAPI socket, as far as vpnsup can tell.
private final class UnixListener {
    private let descriptor: Int32
    private let path: String

    init(path: String) throws {
        self.path = path
        mkdir("/var/run/wireguard", 0o755)
        unlink(path)
        descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(descriptor, 4) == 0 else {
            let code = errno
            Glibc.close(descriptor)
            throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
        }
    }

    func close() {
        Glibc.close(descriptor)
        unlink(path)
    }
}

/// `vpnsup rules` with a wg-quick file: the dry run `run` would commit, without root.
@Suite struct WireGuardRulesTests {
    @Test func aWgQuickFileDryRuns() throws {
        let text = WireGuardRunTests.file(interface: ["DNS = 10.64.0.1", "PostUp = iptables -A FORWARD -j ACCEPT"])
            + "\n[Peer]\nPublicKey = \(WireGuardRunTests.otherKey)\nEndpoint = gw2.example.net:4500\nAllowedIPs = 10.0.0.0/8\n"
        let (directory, environment) = try WireGuardRunTests.scratch(text, ["TUNNEL_IF": "wgx"])
        defer { try? FileManager.default.removeItem(at: directory) }
        let outcome = try execute(vpnsupBinary(), ["rules", "--state", "TunnelUp"], environment: environment)
        #expect(outcome.status == 0, "\(outcome.stderr)")
        let path = directory.appendingPathComponent("wg0.conf").path
        let out = outcome.stdout
        #expect(out.contains("# CONFIG=\(path):5 has PostUp, which is ignored: vpnsup never runs a command from the configuration"))
        #expect(out.contains("# WireGuard link wgx, the transport marked 0x76706e01"))
        #expect(out.contains("# peer J68c2Abc… 198.51.100.1:51820/udp: pinned as written"))
        #expect(out.contains("gw2.example.net:4500/udp: resolved by run (under the resolving ruleset) and pinned"))
        #expect(out.contains("oifname \"vsteth0\" meta mark 0x76706e01 ip daddr 198.51.100.1 udp dport 51820 accept"))
        #expect(out.contains("oifname \"wgx\" masquerade"))
        #expect(out.contains("dnat ip to 10.64.0.1"), "DNS is unset: the file's is enforced")
        #expect(!out.contains("tun0"))
        #expect(!out.contains(WireGuardRunTests.privateKey))
    }

    @Test func aBadFileExits78WithRunsLine() throws {
        let (directory, environment) = try WireGuardRunTests.scratch(WireGuardRunTests.file(interface: ["MTU = 500"]), [:])
        defer { try? FileManager.default.removeItem(at: directory) }
        let outcome = try execute(vpnsupBinary(), ["rules"], environment: environment)
        #expect(outcome.status == 78)
        #expect(outcome.stderr == "CONFIG=\(directory.appendingPathComponent("wg0.conf").path):4 has an MTU that is not a number in 576...9000\n")
    }
}
