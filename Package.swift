// swift-tools-version:6.1
import PackageDescription

/// The release `vpnsup --version` names, and the commit: VPNSUP_COMMIT when set (the Makefile and
/// scripts/build-static.sh set it from scripts/commit.sh; the Dockerfile from a build argument),
/// else the checkout's HEAD when SwiftPM last evaluated this manifest (it does not notice a new
/// HEAD by itself), else "unknown".
let vpnsupVersion = "0.2.0"
let vpnsupCommit: String = {
    if let commit = Context.environment["VPNSUP_COMMIT"], !commit.isEmpty, commit != "unknown" {
        return commit
    }
    guard let git = Context.gitInformation else { return "unknown" }
    return String(git.currentCommit.prefix(12)) + (git.hasUncommittedChanges ? "-dirty" : "")
}()
/// Only characters a C string literal takes as they are.
func cLiteral(_ text: String) -> String {
    "\"" + String(text.filter { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.+".contains($0)) }) + "\""
}

let package = Package(
    name: "vpnsup",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vpnsup", targets: ["vpnsup"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        // The metrics' exposition format (`vpnsup metrics`, METRICS_LISTEN); brings CoreMetrics
        // (swift-metrics) and swift-atomics with it.
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // The kernel's netlink headers (no library: SystemSupport builds the messages itself).
        .systemLibrary(name: "CNetlink"),
        // C libraries, found through pkg-config; Debian's -dev packages provide them.
        .systemLibrary(name: "CNftnl", pkgConfig: "libnftnl", providers: [.apt(["libnftnl-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),

        .target(name: "CBuildInfo", cSettings: [
            .define("VPNSUP_VERSION", to: cLiteral(vpnsupVersion)), .define("VPNSUP_COMMIT", to: cLiteral(vpnsupCommit)),
        ]),

        // The pure core: no Glibc, no I/O, no clocks.
        .target(name: "StateMachine"),
        // The system layer both Watchers and Actions stand on: EINTR-retrying calls and the one
        // errno error, owned descriptors, threads, the netlink socket and message codec.
        .target(name: "SystemSupport", dependencies: ["StateMachine", "CNetlink"]),
        .target(name: "Watchers", dependencies: ["StateMachine", "SystemSupport", "CNetlink"]),
        .target(
            name: "Actions",
            dependencies: ["StateMachine", "SystemSupport", "CNetlink", "CNftnl", "CSystemd", "CBuildInfo",
                           .product(name: "Logging", package: "swift-log")]
        ),
        // The interpreter, the effects (Linux and the OpenVPN backend), the status: everything
        // `vpnsup run` does around the pure machine, usable from tests and other commands.
        .target(
            name: "Supervisor",
            dependencies: ["StateMachine", "SystemSupport", "Watchers", "Actions", .product(name: "Logging", package: "swift-log"),
                           .product(name: "Prometheus", package: "swift-prometheus")]
        ),
        .executableTarget(
            name: "vpnsup",
            dependencies: [
                "StateMachine", "SystemSupport", "Watchers", "Actions", "Supervisor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // Commit timings of the firewall (make bench-firewall); never part of the image.
        .executableTarget(name: "vpnsup-bench", dependencies: ["StateMachine", "SystemSupport", "Actions"]),

        .testTarget(
            name: "StateMachineTests",
            dependencies: ["StateMachine", .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(name: "SystemSupportTests", dependencies: ["SystemSupport", "StateMachine"]),
        // Actions: the nftables monitor is tested against commits through vpnsup's own Firewall.
        .testTarget(name: "WatchersTests", dependencies: ["Watchers", "StateMachine", "SystemSupport", "Actions", "TestSupport"]),
        // Watchers: the WireGuard tests wait for wireguard-go's socket with the socket watcher.
        .testTarget(
            name: "ActionsTests",
            dependencies: ["Actions", "StateMachine", "SystemSupport", "Watchers", "TestSupport", .product(name: "Logging", package: "swift-log"),
                           .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        // The whole supervisor without root: the interpreter, the translators and the record,
        // with a recording fake of the effects.
        .testTarget(
            name: "SupervisorTests",
            dependencies: ["Supervisor", "StateMachine", "SystemSupport", "Watchers", "TestSupport",
                           .product(name: "Logging", package: "swift-log"), .product(name: "Prometheus", package: "swift-prometheus")]
        ),
        .testTarget(name: "vpnsupTests", dependencies: ["vpnsup", "Supervisor", "StateMachine", "SystemSupport", "Watchers", "Actions", "TestSupport"]),
        // What several test targets share: the guard of the root tests (the network namespace
        // `make test` made for them), the Prometheus text exposition read back.
        .target(name: "TestSupport", dependencies: ["Supervisor"], path: "Tests/TestSupport"),
    ],
    swiftLanguageModes: [.v6]
)

// libFuzzer targets (fuzz/run.sh, `make fuzz`). They link only with -sanitize=fuzzer, so they exist
// only when VPNSUP_FUZZ=1: the normal build and `make test` never see them.
if Context.environment["VPNSUP_FUZZ"] == "1" {
    package.targets += [
        .systemLibrary(name: "CLibFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["CLibFuzzer"]),
        .executableTarget(name: "FuzzManagement", dependencies: ["FuzzSupport", "Watchers"]),
        .executableTarget(name: "FuzzConfiguration", dependencies: ["FuzzSupport", "StateMachine", "Watchers"]),
        .executableTarget(name: "FuzzOpenVPNConfig", dependencies: ["FuzzSupport", "StateMachine"]),
        .executableTarget(name: "FuzzDNS", dependencies: ["FuzzSupport", "Actions", "StateMachine"]),
        .executableTarget(name: "FuzzNetlink", dependencies: ["FuzzSupport", "Watchers", "StateMachine"]),
        .executableTarget(name: "FuzzWireGuardConfig", dependencies: ["FuzzSupport", "StateMachine"]),
    ]
}
