import Foundation
import Testing

/// One `vpnsup run` per network namespace: a second one exits 75 with one line naming the first,
/// before it touches the first one's table; in another namespace the lock is free.
@Suite(.enabled(if: isolatedRoot))
struct NamespaceLockTests {
    @Test func aSecondRunInTheNamespaceLeavesTheFirstAlone() throws {
        let directory = try RunCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        // The first supervisor waits in TunnelConnecting behind an `openvpn` that only sleeps; the
        // second is started in the same namespace once the first has committed its connecting
        // ruleset; the table is listed after the second has ended.
        let sleeper = directory.appendingPathComponent("openvpn")
        try "#!/bin/sh\nexec sleep 60\n".write(to: sleeper, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: sleeper.path)
        let script = """
            ip link set lo up && ip link add vsteth0 type veth peer name vsteth1 || exit 99
            mount --bind "$DIR/openvpn" "$(command -v openvpn)" || exit 98
            "$VPNSUP" run 2> "$DIR/first.err" & first=$!
            for _ in $(seq 100); do nft list table inet vpnsup 2>/dev/null | grep -q vsteth0 && break; sleep 0.1; done
            nft list table inet vpnsup > "$DIR/before" 2>&1
            RUNTIME_DIR="$DIR/second" "$VPNSUP" run 2> "$DIR/second.err"; echo $? > "$DIR/second.rc"
            nft list table inet vpnsup > "$DIR/after" 2>&1
            # Another namespace meanwhile: its lock is its own (a bad IP_ADDR gets as far as 78).
            IP_ADDR=garbage unshare --net -- "$VPNSUP" run 2> /dev/null; echo $? > "$DIR/other.rc"
            echo $first > "$DIR/first.pid"
            kill -TERM $first; wait $first
            """
        var environment = RunCommandTests.environment(directory, [:])
        environment["DIR"] = directory.path
        environment["VPNSUP"] = vpnsupBinary()
        let outcome = try execute("/usr/bin/unshare", ["--net", "--mount", "--", "/bin/sh", "-c", script], environment: environment)
        func read(_ name: String) throws -> String { try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8) }
        #expect(outcome.status == 0, "the first ends with 0 on SIGTERM: \(outcome.stderr)")
        #expect(try read("second.rc") == "75\n")
        let first = try read("first.pid").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try read("second.err") == "another vpnsup run (pid \(first)) supervises this network namespace: "
            + "two would fight over table inet vpnsup\n")
        let before = try read("before")
        #expect(before.contains("vsteth0"), "the first committed its connecting ruleset: \(before)")
        #expect(try read("after") == before, "the second never touched the table")
        #expect(!(try read("first.err")).contains("outside change"), "the first saw no change to repair")
        #expect(try read("other.rc") == "78\n", "a supervisor in another namespace is not refused for the lock")
    }
}
