import Glibc

/// Whether root tests may change links, addresses, routes and nftables here: only as root, and
/// only inside the network namespace `make test` creates for the test run (`unshare --net`), which
/// names itself in VPNSUP_TEST_NETNS. Any other namespace may be a machine's own, where a drop
/// policy cuts the machine off; and a namespace that merely differs from PID 1's proves nothing
/// (a sandbox's shells all share one that is not PID 1's). Run the tests as the Makefile does:
///
///     unshare --net -- sh -c 'ip link set lo up && VPNSUP_TEST_NETNS=$(readlink /proc/self/ns/net) exec swift test'
public enum IsolatedNetworkNamespace {
    public static let variable = "VPNSUP_TEST_NETNS"

    public static let isRootInside: Bool = {
        guard getuid() == 0, let own = namespace(of: "self"), let named = getenv(variable).map({ String(cString: $0) }),
              named == own else { return false }
        // init_net always has this inode (PROC_NET_INIT_INO).
        if own == "net:[4026531833]" { return false }
        // The namespace was made for this run: some ancestor (the shell that ran unshare) lives
        // in another one.
        var pid = getppid()
        while pid > 1 {
            if let theirs = namespace(of: String(pid)), theirs != own { return true }
            guard let parent = parentPID(of: pid) else { break }
            pid = parent
        }
        return false
    }()

    public static func namespace(of pid: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 64)
        let count = readlink("/proc/\(pid)/ns/net", &buffer, buffer.count - 1)
        return count > 0 ? String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }

    private static func parentPID(of pid: pid_t) -> pid_t? {
        // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
        guard let file = fopen("/proc/\(pid)/stat", "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 1024)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        let stat = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? pid_t(fields[1]) : nil
    }
}
