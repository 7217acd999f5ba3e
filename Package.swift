// swift-tools-version:6.1
import PackageDescription

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
        // C libraries, found through pkg-config; Debian's -dev packages provide them.
        .systemLibrary(name: "CMnl", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),
        .systemLibrary(name: "CNftnl", pkgConfig: "libnftnl", providers: [.apt(["libnftnl-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),

        // The pure core: no Glibc, no I/O, no clocks.
        .target(name: "StateMachine"),
        .target(name: "Watchers", dependencies: ["StateMachine", "CMnl"]),
        .target(
            name: "Actions",
            dependencies: ["StateMachine", "CMnl", "CNftnl", "CSystemd", .product(name: "Logging", package: "swift-log")]
        ),
        // The interpreter, the effects (Linux and the OpenVPN backend), the status: everything
        // `vpnsup run` does around the pure machine, usable from tests and other commands.
        .target(
            name: "Supervisor",
            dependencies: ["StateMachine", "Watchers", "Actions", .product(name: "Logging", package: "swift-log"),
                           .product(name: "Prometheus", package: "swift-prometheus")]
        ),
        .executableTarget(
            name: "vpnsup",
            dependencies: [
                "StateMachine", "Watchers", "Actions", "Supervisor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // Commit timings of the firewall (make bench-firewall); never part of the image.
        .executableTarget(name: "vpnsup-bench", dependencies: ["StateMachine", "Actions"]),

        .testTarget(
            name: "StateMachineTests",
            dependencies: ["StateMachine", .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        // Actions: the nftables monitor is tested against commits through vpnsup's own Firewall.
        .testTarget(name: "WatchersTests", dependencies: ["Watchers", "StateMachine", "Actions"]),
        // Watchers: the WireGuard tests wait for wireguard-go's socket with the socket watcher.
        .testTarget(
            name: "ActionsTests",
            dependencies: ["Actions", "StateMachine", "Watchers", .product(name: "Logging", package: "swift-log"),
                           .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        // The whole supervisor without root: the interpreter, the translators and the record,
        // with a recording fake of the effects.
        .testTarget(
            name: "SupervisorTests",
            dependencies: ["Supervisor", "StateMachine", "Watchers", "MetricsTestSupport",
                           .product(name: "Logging", package: "swift-log"), .product(name: "Prometheus", package: "swift-prometheus")]
        ),
        .testTarget(name: "vpnsupTests", dependencies: ["vpnsup", "Supervisor", "StateMachine", "Watchers", "MetricsTestSupport"]),
        // The Prometheus text exposition read back, for the metrics tests of both targets above.
        .target(name: "MetricsTestSupport", dependencies: ["Supervisor"], path: "Tests/MetricsTestSupport"),
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
