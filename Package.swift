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
    ],
    targets: [
        // C libraries, found through pkg-config; Debian's -dev packages provide them.
        .systemLibrary(name: "CMnl", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),
        .systemLibrary(name: "CNftnl", pkgConfig: "libnftnl", providers: [.apt(["libnftnl-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),

        // The pure core: no Glibc, no I/O, no clocks.
        .target(name: "StateMachine"),
        // The system layer both Watchers and Actions stand on: EINTR-retrying calls and the one
        // errno error, owned descriptors, threads, the netlink socket and message codec.
        .target(name: "SystemSupport", dependencies: ["CMnl"]),
        .target(name: "Watchers", dependencies: ["StateMachine", "SystemSupport", "CMnl"]),
        .target(
            name: "Actions",
            dependencies: ["StateMachine", "SystemSupport", "CMnl", "CNftnl", "CSystemd",
                           .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "vpnsup",
            dependencies: [
                "StateMachine", "SystemSupport", "Watchers", "Actions",
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
        .testTarget(name: "SystemSupportTests", dependencies: ["SystemSupport"]),
        // Actions: the nftables monitor is tested against commits through vpnsup's own Firewall.
        .testTarget(name: "WatchersTests", dependencies: ["Watchers", "StateMachine", "SystemSupport", "Actions"]),
        .testTarget(
            name: "ActionsTests",
            dependencies: ["Actions", "StateMachine", "SystemSupport", .product(name: "Logging", package: "swift-log"),
                           .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(name: "vpnsupTests", dependencies: ["vpnsup", "StateMachine", "Watchers", "Actions"]),
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
    ]
}
