// vpnsup-bench: how long committing (and reading back) the `up` ruleset takes with 1, 1,000 and
// 10,000 port forwards, and nft -f of the same ruleset text for comparison. Commits drop-policy
// rulesets, so it refuses to run outside a network namespace of its own: use
// `make bench-firewall` (scripts/bench-firewall.sh runs it under `unshare --net`) or `make bench`.
//
//   vpnsup-bench [--runs N] [--forwards N,N,...] [--samples]
//       the timings; --samples prints every sample as JSON lines instead of the table of medians
//   vpnsup-bench apply --forwards N [--targets IP:PORT/PROTO,...]
//       commits the `up` ruleset (LAN eth1, tunnel tun0) with N forwards once and leaves it: the
//       data-plane benchmark's router. The targets take the highest public ports, the first one
//       20000+N-1, the next 20000+N-2...
import Actions
import Glibc
import StateMachine
import SystemSupport

/// Whether this process has a network namespace other than the machine's own.
func inPrivateNetworkNamespace() -> Bool {
    func namespace(_ pid: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 64)
        let count = readlink("/proc/\(pid)/ns/net", &buffer, buffer.count - 1)
        return count > 0 ? String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }
    // init_net always has this inode; PID 1 may be hidden (a container), hence both checks.
    guard let own = namespace("self"), own != "net:[4026531833]" else { return false }
    return namespace("1").map { $0 != own } ?? true
}

/// `count` forwards from public port 20000 on, every third one UDP, to LAN targets.
func forwards(_ count: Int) -> [PortForward] {
    (0..<count).map { (index: Int) -> PortForward in
        let target = IPv4Address(172, 30, UInt8(index / 250), UInt8(index % 250 + 2))
        let transport: TransportProtocol = index % 3 == 0 ? .udp : .tcp
        return PortForward(publicPort: UInt16(20_000 + index), target: target, targetPort: UInt16(1024 + index),
                           transport: transport)
    }
}

func milliseconds(_ duration: Duration) -> Double {
    let (seconds, attoseconds) = duration.components
    return Double(seconds) * 1000 + Double(attoseconds) / 1e15
}

func median(_ samples: [Duration]) -> Double {
    let sorted = samples.map(milliseconds).sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func format(_ value: Double) -> String {
    let rounded = (value * 100).rounded() / 100
    let text = String(rounded)
    let decimals = text.split(separator: ".").last?.count ?? 0
    return text + String(repeating: "0", count: max(0, 2 - decimals))
}

func pad(_ text: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - text.count)) + text }

/// Runs `nft -f path` with its output discarded; returns its exit status.
func nftLoad(_ nft: String, _ path: String) -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup(nft), strdup("-f"), strdup(path), nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    guard posix_spawn(&pid, nft, &actions, nil, argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    _ = try? retryingInterrupts("waitpid") { waitpid(pid, &status, 0) }
    return status
}

func fail(_ message: String) -> Never {
    print("vpnsup-bench: \(message)")
    exit(1)
}

/// The benchmark layout: LAN eth1, WAN eth0, tunnel tun0, one endpoint, DNS enforced.
func layout(_ portForwards: [PortForward]) -> NetworkLayout {
    NetworkLayout(lanInterface: "eth1", wanInterface: "eth0", tunnelInterface: "tun0",
                  endpoints: [Endpoint(address: IPv4Address(198, 51, 100, 7), port: 1194, transport: .udp)],
                  transportMark: 0x5650, dns: IPv4Address(10, 64, 0, 1), portForwards: portForwards)
}

/// "IP:PORT/tcp|udp" as a forward from `publicPort`.
func target(_ text: Substring, publicPort: Int) -> PortForward? {
    let parts = text.split(separator: "/")
    let hostPort = parts[0].split(separator: ":")
    let octets = hostPort.first?.split(separator: ".").compactMap { UInt8($0) } ?? []
    guard hostPort.count == 2, octets.count == 4, let port = UInt16(hostPort[1]) else { return nil }
    let transport: TransportProtocol = parts.count > 1 && parts[1] == "udp" ? .udp : .tcp
    return PortForward(publicPort: UInt16(publicPort), target: IPv4Address(octets[0], octets[1], octets[2], octets[3]),
                       targetPort: port, transport: transport)
}

var runs = 15
var counts = [1, 1_000, 10_000]
var samplesAsJSON = false
var applyOnce = false
var targets: [Substring] = []
var arguments = CommandLine.arguments.dropFirst()
if arguments.first == "apply" {
    applyOnce = true
    arguments = arguments.dropFirst()
}
while let argument = arguments.popFirst() {
    switch argument {
    case "--samples":
        samplesAsJSON = true
    case "--targets":
        targets = (arguments.popFirst() ?? "").split(separator: ",")
    case "--runs":
        guard let value = arguments.popFirst(), let number = Int(value), number > 0 else { fail("--runs needs a positive number") }
        runs = number
    case "--forwards":
        let list = (arguments.popFirst() ?? "").split(separator: ",").compactMap { Int($0) }
        guard !list.isEmpty, list.allSatisfy({ (0...45_000).contains($0) }) else { fail("--forwards needs N,N,... (each 0-45000)") }
        counts = list
    default:
        fail("usage: vpnsup-bench [--runs N] [--forwards N,N,...] [--samples] | apply --forwards N [--targets IP:PORT/PROTO,...]")
    }
}
guard getuid() == 0 else { fail("needs root (CAP_NET_ADMIN)") }
guard inPrivateNetworkNamespace() else {
    fail("refusing to commit drop policies in this machine's own network namespace; run under `unshare --net` (make bench-firewall)")
}
let nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first { (path: String) in access(path, X_OK) == 0 }

if applyOnce {
    let count = counts[0]
    var portForwards = forwards(count)
    for (index, text) in targets.enumerated() where index < count {
        guard let forward = target(text, publicPort: 20_000 + count - 1 - index) else { fail("bad target \(text)") }
        portForwards[count - 1 - index] = forward
    }
    do {
        try Firewall().commit(Ruleset.build(.up, for: layout(portForwards)))
    } catch {
        fail("\(error)")
    }
    exit(0)
}

/// One JSON line per series: its forwards, its name and every sample in milliseconds.
func emit(_ count: Int, _ series: String, _ samples: [Duration]) {
    let values = samples.map { String(milliseconds($0)) }.joined(separator: ",")
    print("{\"forwards\":\(count),\"series\":\"\(series)\",\"samples\":[\(values)]}")
}

let clock = ContinuousClock()
if !samplesAsJSON {
print("`up` ruleset (DNS enforcement, \(runs) runs each, median ms; commits include the read-back verification)")
print(pad("forwards", 9) + pad("fresh commit", 14) + pad("replace", 10) + pad("read-back", 11) + pad("nft -f", 9))
}
do {
    let firewall = try Firewall()
    for count in counts {
        let ruleset = Ruleset.build(.up, for: layout(forwards(count)))
        var fresh: [Duration] = [], replace: [Duration] = [], readBack: [Duration] = [], viaNft: [Duration] = []
        try firewall.commit(ruleset) // warm-up: first-use allocations in the kernel and here
        for _ in 0..<runs {
            try firewall.deleteTable()
            fresh.append(try clock.measure { try firewall.commit(ruleset) })
            replace.append(try clock.measure { try firewall.commit(ruleset) })
            var differences: [String] = []
            readBack.append(try clock.measure { differences = try firewall.differences(from: ruleset) })
            guard differences.isEmpty else { fail("read-back differs: \(differences.prefix(3))") }
        }
        var nftColumn = "-"
        if let nft {
            let path = "/tmp/vpnsup-bench-\(getpid()).nft"
            let text = ruleset.nftText
            guard let file = fopen(path, "w") else { fail("cannot write \(path)") }
            fputs(text, file)
            fclose(file)
            defer { unlink(path) }
            for _ in 0..<runs {
                try firewall.deleteTable()
                var status: Int32 = 0
                viaNft.append(clock.measure { status = nftLoad(nft, path) })
                guard status == 0 else { fail("nft -f of the ruleset text failed (status \(status))") }
            }
            nftColumn = format(median(viaNft))
        }
        if samplesAsJSON {
            emit(count, "fresh commit", fresh)
            emit(count, "replace", replace)
            emit(count, "read-back", readBack)
            emit(count, "nft -f", viaNft)
            continue
        }
        print(pad("\(count)", 9) + pad(format(median(fresh)), 14) + pad(format(median(replace)), 10)
              + pad(format(median(readBack)), 11) + pad(nftColumn, 9))
    }
    try firewall.deleteTable()
} catch {
    fail("\(error)")
}
