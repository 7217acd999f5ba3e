import Foundation
import Testing
@testable import vpnsup

/// docs/reliability.md, "Bad input": malformed values and files given to `vpnsup run`, each in a
/// network namespace of its own. Every one must end with exit 78, one stderr line naming the
/// input, and the lockdown table committed; none may crash. (RunCommandTests holds the first
/// cases; these add files with bad contents and the remaining variables.)
@Suite(.enabled(if: isolatedRoot))
struct BadInputTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var variables: [String: String] = [:]
        /// Files written into the scratch directory before the run, replacing the good ones.
        var files: [String: [UInt8]] = [:]
        var directories: [String] = []
        /// FIFOs made in the scratch directory (replacing a file of that name).
        var fifos: [String] = []
        /// Symlinks made in the scratch directory: name -> destination (`<dir>` expanded).
        var symlinks: [String: String] = [:]
        /// Permission bits set on scratch entries after they are made.
        var modes: [String: Int] = [:]
        /// The expected stderr line; `<dir>` stands for the scratch directory.
        var line: String
        /// Text that must not appear on stderr (a secret).
        var secret: String?

        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "IP_ADDR prefix over 32", variables: ["IP_ADDR": "172.22.0.1/33"],
             line: "IP_ADDR=172.22.0.1/33 is not an IPv4 address with prefix length"),
        Case(name: "IP_ADDR /31 leaves no LAN", variables: ["IP_ADDR": "172.22.0.1/31"],
             line: "IP_ADDR=172.22.0.1/31 has a prefix length outside 1...30, which leaves no room for a LAN"),
        Case(name: "IP_ADDR broadcast address", variables: ["IP_ADDR": "172.22.0.255/24"],
             line: "IP_ADDR=172.22.0.255/24 is the network or broadcast address of its subnet"),
        Case(name: "PORT_FWD repeated", variables: ["PORT_FWD": "172.22.0.10:80,172.22.0.10:80"],
             line: "PORT_FWD=172.22.0.10:80,172.22.0.10:80 has '172.22.0.10:80', which repeats the forward of 80/tcp"),
        Case(name: "PORT_FWD conflicting", variables: ["PORT_FWD": "8080:172.22.0.10:80/tcp,8080:172.22.0.11:81/tcp"],
             line: "PORT_FWD=8080:172.22.0.10:80/tcp,8080:172.22.0.11:81/tcp has '8080:172.22.0.11:81/tcp', "
                + "which forwards 8080/tcp again, already forwarded to 172.22.0.10:80"),
        Case(name: "PORT_FWD outside the LAN", variables: ["PORT_FWD": "10.0.0.1:80"],
             line: "PORT_FWD=10.0.0.1:80 has '10.0.0.1:80', which targets 10.0.0.1, outside the LAN 172.22.0.0/24"),
        Case(name: "PORT_FWD public port 0", variables: ["PORT_FWD": "0:172.22.0.10:80"],
             line: "PORT_FWD=0:172.22.0.10:80 has '0:172.22.0.10:80', which has a public port outside 1...65535"),
        Case(name: "WAN_IF same as LAN_IF", variables: ["WAN_IF": "vsteth1"],
             line: "WAN_IF=vsteth1 is the same interface as LAN_IF"),
        Case(name: "WAN_IF does not exist", variables: ["WAN_IF": "nosuch0"],
             line: "WAN_IF=nosuch0 names no interface in this network namespace"),
        Case(name: "LAN_IF with a quote", variables: ["LAN_IF": "vst\"eth1"],
             line: "LAN_IF=vst\"eth1 holds a '\"', which nft cannot write in a ruleset"),
        Case(name: "CONFIG unset", variables: ["CONFIG": ""],
             line: "CONFIG= is required: the OpenVPN configuration file, absolute or relative to CONFIG_DIR"),
        Case(name: "CONFIG without a remote", files: ["client.ovpn": Array("client\ndev tun\nproto udp\n".utf8)],
             line: "CONFIG=<dir>/client.ovpn has no remote line"),
        Case(name: "CONFIG with unusable remotes only",
             files: ["client.ovpn": Array("client\nremote 192.0.2.1 0\nremote 192.0.2.1 http\n".utf8)],
             line: "CONFIG=<dir>/client.ovpn has no usable remote: 192.0.2.1 0 udp (port '0' is not a number in 1...65535 "
                + "(vpnsup pins numeric ports)); 192.0.2.1 http udp (port 'http' is not a number in 1...65535 (vpnsup pins numeric ports))"),
        Case(name: "CONFIG with an empty quoted remote", files: ["client.ovpn": Array("client\nremote \"\" 1194\n".utf8)],
             line: "CONFIG=<dir>/client.ovpn has no usable remote: \"\" 1194 udp (no host)"),
        Case(name: "CONFIG with an IPv6 remote only", files: ["client.ovpn": Array("client\nremote 2001:db8::1 1194\n".utf8)],
             line: "CONFIG=<dir>/client.ovpn has no usable remote: 2001:db8::1 1194 udp (an IPv6 address, and the WAN carries IPv4 only)"),
        Case(name: "CONFIG with udp6 remotes only", files: ["client.ovpn": Array("client\nproto udp6\nremote vpn.example.com 1194\n".utf8)],
             line: "CONFIG=<dir>/client.ovpn has no usable remote: vpn.example.com 1194 udp6 (udp6 is IPv6 only, and the WAN carries IPv4 only)"),
        Case(name: "CONFIG with a tap device", files: ["client.ovpn": Array("client\ndev tap\nremote 192.0.2.1 1194\n".utf8)],
             line: "CONFIG=<dir>/client.ovpn:2: dev tap: vpnsup routes at layer 3: OpenVPN's device is tun0, a tun "
                + "(a tap device would bridge Ethernet frames)"),
        Case(name: "CONFIG with key-method 1", files: ["client.ovpn": Array("client\nkey-method 1\nremote 192.0.2.1 1194\n".utf8)],
             line: "CONFIG=<dir>/client.ovpn:2: key-method 1: key method 1 is not supported by OpenVPN 2.5 and later (only method 2, the default)"),
        Case(name: "CONFIG with a merge-conflict marker",
             files: ["client.ovpn": Array("client\n<<<<<<< HEAD\nremote 192.0.2.1 1194\n=======\nremote 192.0.2.2 1194\n>>>>>>> new\n".utf8)],
             line: "CONFIG=<dir>/client.ovpn:2: <<<<<<< HEAD: a merge-conflict marker: resolve the conflict in the file"),
        Case(name: "CONFIG with an unclosed quote", files: ["client.ovpn": Array("client\nca \"ca.crt\nremote 192.0.2.1 1194\n".utf8)],
             line: "CONFIG=<dir>/client.ovpn:2: no closing quotation (\")"),
        Case(name: "CONFIG is a directory", variables: ["CONFIG": "config.d"], directories: ["config.d"],
             line: "CONFIG=<dir>/config.d cannot be read: not a regular file but a directory"),
        Case(name: "CONFIG is not UTF-8", files: ["client.ovpn": Array("remote 192.0.2.1 1194 # ".utf8) + [0xff, 0xfe, 0x0a]],
             line: "CONFIG=<dir>/client.ovpn cannot be read: decode as UTF-8: Invalid or incomplete multibyte or wide character"),
        Case(name: "CONFIG over 1 MiB", files: ["client.ovpn": Array("remote 192.0.2.1 1194\n".utf8) + [UInt8](repeating: 0x23, count: 1 << 20)],
             line: "CONFIG=<dir>/client.ovpn cannot be read: over 1 MiB (1048598 bytes)"),
        Case(name: "credentials empty", files: ["credentials": []],
             line: "CREDENTIALS_FILE=<dir>/credentials must hold a username line and a password line"),
        Case(name: "credentials one line", files: ["credentials": Array("user\n".utf8)],
             line: "CREDENTIALS_FILE=<dir>/credentials must hold a username line and a password line"),
        Case(name: "credentials with a CR that would inject a command",
             files: ["credentials": Array("user\npw\rsignal SIGTERM\n".utf8)],
             line: "CREDENTIALS_FILE=<dir>/credentials holds a control character that could inject a management command",
             secret: "SIGTERM"),
        Case(name: "credentials with a NUL", files: ["credentials": Array("user\nhunter\u{0}2\n".utf8)],
             line: "CREDENTIALS_FILE=<dir>/credentials holds a control character that could inject a management command",
             secret: "hunter"),
        Case(name: "PORT_FWD_FILE with a target outside the LAN", variables: ["PORT_FWD_FILE": "<dir>/forwards"],
             files: ["forwards": Array("# forwards\n8080:172.22.0.10:80/tcp\n8081:10.0.0.5:81/tcp\n".utf8)],
             line: "PORT_FWD_FILE=<dir>/forwards:3 has '8081:10.0.0.5:81/tcp', which targets 10.0.0.5, outside the LAN 172.22.0.0/24"),
        Case(name: "PORT_FWD_FILE missing", variables: ["PORT_FWD_FILE": "<dir>/no-forwards"],
             line: "PORT_FWD_FILE=<dir>/no-forwards cannot be read: open: No such file or directory"),
        Case(name: "RUNTIME_DIR below a file", variables: ["RUNTIME_DIR": "<dir>/credentials/run"],
             line: "RUNTIME_DIR=<dir>/credentials/run cannot be prepared: <dir>/credentials is not a directory"),
        // docs/security.md, "Local trust boundaries".
        Case(name: "IP_ADDR with a newline", variables: ["IP_ADDR": "172.22.0.1/24\nIP_ADDR=forged"],
             line: "IP_ADDR=172.22.0.1/24\\nIP_ADDR=forged is not an IPv4 address with prefix length"),
        Case(name: "credentials a FIFO", fifos: ["credentials"],
             line: "CREDENTIALS_FILE=<dir>/credentials cannot be read: not a regular file but a FIFO"),
        Case(name: "CONFIG a FIFO", fifos: ["client.ovpn"],
             line: "CONFIG=<dir>/client.ovpn cannot be read: not a regular file but a FIFO"),
        Case(name: "RUNTIME_DIR a symlink", variables: ["RUNTIME_DIR": "<dir>/run"], directories: ["elsewhere"],
             symlinks: ["run": "<dir>/elsewhere"],
             line: "RUNTIME_DIR=<dir>/run cannot be prepared: <dir>/run is a symlink: RUNTIME_DIR must name the directory itself"),
        Case(name: "RUNTIME_DIR below a directory others can write", variables: ["RUNTIME_DIR": "<dir>/open/run"],
             directories: ["open"], modes: ["open": 0o777],
             line: "RUNTIME_DIR=<dir>/open/run cannot be prepared: <dir>/open is writable by group or others (mode 0777) "
                + "and not sticky: they could replace what is below it"),
    ]

    @Test(arguments: cases)
    func exits78WithOneLineAndTheLockdownCommitted(_ bad: Case) throws {
        let directory = try RunCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        for (name, bytes) in bad.files {
            try Data(bytes).write(to: directory.appendingPathComponent(name))
        }
        for name in bad.directories {
            try FileManager.default.createDirectory(at: directory.appendingPathComponent(name), withIntermediateDirectories: true)
        }
        for name in bad.fifos {
            let path = directory.appendingPathComponent(name).path
            unlink(path)
            #expect(mkfifo(path, 0o600) == 0)
        }
        for (name, destination) in bad.symlinks {
            try FileManager.default.createSymbolicLink(atPath: directory.appendingPathComponent(name).path,
                                                       withDestinationPath: destination.replacingOccurrences(of: "<dir>", with: directory.path))
        }
        for (name, mode) in bad.modes {
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: directory.appendingPathComponent(name).path)
        }
        let variables = bad.variables.mapValues { $0.replacingOccurrences(of: "<dir>", with: directory.path) }
        let tableFile = directory.appendingPathComponent("table")

        let outcome = try runIsolated(["run"], environment: RunCommandTests.environment(directory, variables), tableTo: tableFile)

        #expect(outcome.status == 78, "\(outcome.stderr)")
        let lines = outcome.stderr.split(separator: "\n").map(String.init)
        #expect(lines == [bad.line.replacingOccurrences(of: "<dir>", with: directory.path)],
                "a bad configuration gets stderr to itself")
        if let secret = bad.secret {
            #expect(!outcome.stderr.contains(secret), "the credentials never appear in a message")
        }
        let table = try String(contentsOf: tableFile, encoding: .utf8)
        #expect(table.contains("hook forward priority filter; policy drop;"), "the lockdown stays committed: \(table)")
        #expect(table.contains("oifname \"lo\" accept"))
        #expect(!table.contains("vsteth0"), "the lockdown names no interface but loopback")
    }

    /// A credentials file every user can read still works (Docker mounts secrets 0444), with a
    /// warning naming it; a 0600 file gets none.
    @Test(arguments: [(0o644, true), (0o600, false)])
    func worldReadableCredentialsWarn(mode: Int, warns: Bool) throws {
        let directory = try RunCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let credentials = directory.appendingPathComponent("credentials")
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: credentials.path)
        // vpnsup runs until its connecting ruleset pins the remote (the configuration was accepted
        // and its deferred log written), then gets SIGTERM.
        let script = """
            ip link set lo up && ip link add vsteth0 type veth peer name vsteth1 || exit 99
            "$VPNSUP" run 2>"$DIR/stderr" & pid=$!
            i=0; until nft list table inet vpnsup 2>/dev/null | grep -q 'ip daddr 192.0.2.1 udp dport 1194 accept' || [ $i -ge 100 ]; do
                sleep 0.05; i=$((i+1)); done
            nft list table inet vpnsup > "$DIR/connecting" 2>&1
            kill -TERM $pid; wait $pid
            """
        var environment = RunCommandTests.environment(directory, [:])
        environment["DIR"] = directory.path
        environment["VPNSUP"] = vpnsupBinary()
        let outcome = try execute("/usr/bin/unshare", ["--net", "--", "/bin/sh", "-c", script], environment: environment)
        let stderr = try String(contentsOf: directory.appendingPathComponent("stderr"), encoding: .utf8)
        #expect(outcome.status == 0, "SIGTERM ends vpnsup with 0: \(stderr)")
        let connecting = try String(contentsOf: directory.appendingPathComponent("connecting"), encoding: .utf8)
        #expect(connecting.contains("ip daddr 192.0.2.1 udp dport 1194 accept"), "the configuration was accepted: \(stderr)")
        let warning = "CREDENTIALS_FILE=\(credentials.path) is readable by every user (mode 0644): chmod 600 it, or give the secret mode 0400"
        #expect(stderr.contains(warning) == warns, "\(stderr)")
    }
}
