import FoundationEssentials
import Glibc
import StateMachine
import SystemSupport
@testable import Supervisor
import Testing
import Watchers

/// Provider configurations through the whole supervisor (recording effects), and the OpenVPN
/// backend's side of them against a stand-in program: the vetted text on disk, the output read
/// through a pipe, OpenVPN's configuration errors.
@Suite("Provider configurations: the supervisor")
struct ProviderSupervisorTests {
    static let optionsError = "Options error: Unrecognized option or missing or extra parameter(s) in /config/client.ovpn:3: foo-bar (2.6.14)"

    @Test func aConfigurationOpenVPNRefusesEndsRunWith78AfterTheLockdown() async throws {
        let world = World()
        await world.effects.scriptWatchingOutput()
        await world.start()
        await world.addressAppears()
        #expect(await world.machine.tunnelPID == 100)
        await world.management(.connected)
        await world.management(.hold("Waiting for hold release:0"))
        let before = await world.actions.count
        // OpenVPN printed its error and exited: the exit waits for the output's end.
        await world.signal(.childExited(pid: 100, status: .exited(1)))
        #expect(await world.actions(since: before) == [.scheduleTimer(.tunnelOutput, after: .seconds(2))])
        #expect(await world.driver.exitCode == nil)
        await world.post(.tunnel(Translation(events: [.tunnelOutputEnded(configurationError: Self.optionsError)])))
        let line = "CONFIG=/config/client.ovpn: OpenVPN exited with status 1: " + Self.optionsError
        let after = await world.actions(since: before + 1)
        #expect(after == [.cancelTimer(.tunnelOutput), .forgetTunnelProcess, .applyFirewall(.lockdown), .cancelTimer(.respawn),
                          .cancelTimer(.crashWindow), .exit(code: 78, message: line)])
        #expect(await world.driver.exitCode == 78)
        let all = await world.actions
        #expect(all.filter { $0 == .startTunnel }.count == 1, "OpenVPN was started once")
        #expect(world.status.state == "Killswitched")
        #expect(world.status.reason == line)
        #expect(world.notifier.sent.last == "STOPPING=1")
    }

    @Test func findingsAreLoggedOnceAtTheirLevelAndShownInTheStatus() async throws {
        let text = "client\nup /etc/openvpn/update-resolv-conf\nncp-disable\nremote 192.0.2.1 1194\nremote 2001:db8::1 1194\n"
        let review = OpenVPNConfigReview(text: text, path: "/config/client.ovpn")
        let loaded = LoadedConfiguration(configuration: World.configuration, remotes: review.remotes,
                                         credentials: CredentialsToken(generation: 1), findings: review.vetted.findings,
                                         skippedRemotes: review.skipped)
        let world = World(load: .configurationLoaded(loaded))
        await world.bringUp()
        let up = "warning CONFIG=/config/client.ovpn:2: up /etc/openvpn/update-resolv-conf: dropped: runs a program (no configuration makes OpenVPN run or load anything under vpnsup)"
        #expect(world.log.written.filter { $0 == up }.count == 1, "\(world.log.written)")
        #expect(world.log.written.contains { $0.hasPrefix("warning CONFIG=/config/client.ovpn:3: ncp-disable: dropped: removed in OpenVPN 2.6") })
        #expect(world.log.written.contains("warning CONFIG=/config/client.ovpn: remote 2001:db8::1 1194 udp (line 5): skipped: an IPv6 address, and the WAN carries IPv4 only"))
        let findings = try #require(world.status.findings)
        #expect(findings.map(\.line) == [2, 3])
        #expect(findings[0] == StatusSnapshot.Finding(file: "/config/client.ovpn", line: 2, directive: "up /etc/openvpn/update-resolv-conf",
                                                      action: "dropped", replacement: nil, level: "warning",
                                                      reason: "runs a program (no configuration makes OpenVPN run or load anything under vpnsup)"))
        #expect(world.status.skippedRemotes == ["remote 2001:db8::1 1194 udp (line 5): skipped: an IPv6 address, and the WAN carries IPv4 only"])
        // The skipped profile must be skipped by OpenVPN too: it asks about each remote.
        let plan = try #require(await world.performed.first { $0.action == .startTunnel }?.machine.tunnelPlan)
        #expect(plan.asksForRemotes)

        // A reload of the same file says nothing again; one with a new finding says that one.
        let same = ReloadedConfiguration(remotes: review.remotes, credentials: CredentialsToken(generation: 2),
                                         findings: review.vetted.findings, skippedRemotes: review.skipped)
        await world.effects.script(reload: .configurationReloaded(same))
        await world.signal(.reload)
        #expect(world.log.written.filter { $0 == up }.count == 1)
        let changed = OpenVPNConfigReview(text: text + "no-iv\n", path: "/config/client.ovpn")
        await world.effects.script(reload: .configurationReloaded(ReloadedConfiguration(
            remotes: changed.remotes, credentials: CredentialsToken(generation: 3), findings: changed.vetted.findings,
            skippedRemotes: changed.skipped)))
        await world.signal(.reload)
        #expect(world.log.written.filter { $0 == up }.count == 1)
        #expect(world.log.written.contains("warning CONFIG=/config/client.ovpn:6: no-iv: dropped: removed in OpenVPN 2.5, a no-op since 2.4"))
        #expect(world.status.findings?.map(\.line) == [2, 3, 6])
    }

    @Test func aNameThatMovesIsResolvedAgainAndShownInTheStatus() async throws {
        let world = World(load: .configurationLoaded(World.hostName))
        await world.start()
        await world.event(.namesResolved(addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 7)]], failures: [:],
                                         elapsed: .microseconds(1500)))
        #expect(world.status.resolutions == 1)
        #expect(world.status.lastResolution?.cause == "start-up")
        #expect(world.status.lastResolution?.milliseconds == 1.5)
        await world.addressAppears()
        await world.management(.connected)
        await world.management(.hold("Waiting for hold release:0"))
        await world.management(.remote(host: "vpn.example.net", port: 1194, proto: "udp"))
        #expect(await world.actions.last == .answerRemote(.modify(IPv4Address(198, 51, 100, 7), port: 1194)))
        // The attempt at 198.51.100.7 failed (OpenVPN reconnects and asks again): a full round.
        await world.openvpnState("RECONNECTING")
        let before = await world.actions.count
        await world.management(.remote(host: "vpn.example.net", port: 1194, proto: "udp"))
        #expect(await world.actions(since: before) == [.openNameResolution, .resolveNames(["vpn.example.net"])])
        #expect(world.log.written.contains("notice every pinned address failed to connect since the tunnel was last up (198.51.100.7:1194/udp): resolving vpn.example.net again"))
        await world.event(.namesResolved(addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 9)]], failures: [:],
                                         elapsed: .milliseconds(3)))
        #expect(await world.actions(since: before + 2) == [.applyFirewall(.connecting), .answerRemote(.modify(IPv4Address(198, 51, 100, 9), port: 1194))])
        // The connecting ruleset committed before the answer pinned the new address.
        let commit = try #require(await world.performed.last { $0.action == .applyFirewall(.connecting) })
        #expect(commit.machine.ruleset(for: .connecting)?.nftText.contains("ip daddr 198.51.100.9 udp dport 1194 accept") == true)
        #expect(world.status.endpoints == ["198.51.100.9:1194/udp"])
        #expect(world.status.resolvedRemotes == ["vpn.example.net": ["198.51.100.9"]])
        let resolution = try #require(world.status.lastResolution)
        #expect(resolution.cause == "every pinned address failed to connect")
        #expect(resolution.names == ["vpn.example.net"])
        #expect(resolution.addresses == ["vpn.example.net": ["198.51.100.9"]])
        #expect(resolution.milliseconds == 3)
        #expect(resolution.endpoints == ["198.51.100.9:1194/udp"])
        #expect(!resolution.at.isEmpty)
        #expect(world.status.resolutions == 2)
        #expect(world.log.written.contains("notice resolved again in 3.000 ms: vpn.example.net -> 198.51.100.9; now 198.51.100.9:1194/udp"))
    }
}

@Suite("Provider configurations: the OpenVPN backend")
struct OpenVPNBackendTests {
    private let plan = TunnelPlan(configurationPath: "/config/vpn/provider.ovpn", runtimeDirectory: "/run/vpnsup",
                                  asksForRemotes: false, vettedText: "client\n")

    @Test func openVPNReadsTheVettedTextAndRunsNothing() {
        let arguments = OpenVPNBackend(extraArguments: ["--verb", "4", "--script-security", "2"]).arguments(for: plan)
        // Machine-readable first: it holds for the configuration's own errors too.
        #expect(Array(arguments.prefix(5)) == ["--machine-readable-output", "--cd", "/config/vpn", "--config", "/run/vpnsup/openvpn.conf"])
        #expect(!arguments.contains("/config/vpn/provider.ovpn"), "never the user's file")
        // Last, after the user's own arguments: nothing can let OpenVPN run a program.
        #expect(Array(arguments.suffix(2)) == ["--script-security", "0"])
        #expect(Array(arguments.suffix(6).prefix(4)) == ["--verb", "4", "--script-security", "2"])
        #expect(ConfigurationFile.directory(of: "/provider.ovpn") == "/")
    }

    @Test func errorsNameTheUsersFile() {
        let reader = OpenVPNOutputReader(log: nil, inbox: nil, pid: 1, vettedPath: "/run/vpnsup/openvpn.conf",
                                         configurationPath: "/config/provider.ovpn")
        #expect(reader.userPaths("Options error: Unrecognized option or missing or extra parameter(s) in /run/vpnsup/openvpn.conf:12: foo (2.6.14)")
                == "Options error: Unrecognized option or missing or extra parameter(s) in /config/provider.ovpn:12: foo (2.6.14)")
        #expect(OpenVPNOutputReader.level(OpenVPNLogLine("1796554361.048599 b000 Options error: x").severity) == .error)
        #expect(OpenVPNOutputReader.level(OpenVPNLogLine("1796554361.048629 1040 Use --help for more information.").severity) == .warning)
    }

    /// A stand-in for OpenVPN (a shell script printing as OpenVPN does with --machine-readable-output):
    /// the backend writes the vetted text 0600 before it starts, reads the output through a pipe,
    /// logs each line and reports the end with OpenVPN's error, the vetted path replaced by CONFIG's.
    @Test func theOutputIsReadAndItsEndReportedWithTheConfigurationError() async throws {
        var template = Array("/tmp/vpnsup-backend-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else { throw SystemFailure() }
        let directory = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer {
            for name in ["openvpn", "openvpn.conf", "management.sock", "seen-mode"] { unlink(directory + "/" + name) }
            rmdir(directory)
        }
        let script = """
            #!/bin/sh
            # Prints what OpenVPN would about the file it was given, after checking it is private.
            for a; do [ "$prev" = --config ] && config=$a; prev=$a; done
            stat -c %a "$config" > \(directory)/seen-mode
            echo "1796554361.048599 1 OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)]"
            echo "1796554361.048600 b000 Options error: Unrecognized option or missing or extra parameter(s) in $config:3: foo-bar (2.6.14)"
            echo "1796554361.048629 1040 Use --help for more information."
            exit 1
            """
        let executable = directory + "/openvpn"
        try script.write(toFile: executable, atomically: true, encoding: .utf8)
        chmod(executable, 0o755)

        let log = RecordingLog()
        let supervisorLog = SupervisorLog(log.logger())
        supervisorLog.open() // OpenVPN starts only once the configuration is accepted
        let backend = OpenVPNBackend(executable: executable, log: supervisorLog)
        let inbox = Inbox()
        try backend.open(runtimeDirectory: directory, inbox: inbox)
        defer { backend.close() }
        let plan = TunnelPlan(configurationPath: "/config/provider.ovpn", runtimeDirectory: directory,
                              asksForRemotes: false, vettedText: "client\n\nfoo-bar\n")
        let pid = try #require(try backend.start(plan))
        #expect(backend.watchesOutput)

        var ended: [Event] = []
        for await input in inbox.inputs {
            if case .tunnel(let translation) = input, translation.events.contains(where: { if case .tunnelOutputEnded = $0 { true } else { false } }) {
                ended = translation.events
                break
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        #expect(ended == [.tunnelOutputEnded(configurationError:
            "Options error: Unrecognized option or missing or extra parameter(s) in /config/provider.ovpn:3: foo-bar (2.6.14)")])
        #expect((try? String(contentsOfFile: directory + "/seen-mode", encoding: .utf8)) == "600\n", "the vetted text is 0600 when OpenVPN reads it")
        #expect((try? String(contentsOfFile: directory + "/openvpn.conf", encoding: .utf8)) == "client\n\nfoo-bar\n")
        #expect(log.written.contains("info openvpn: OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)]"))
        #expect(log.written.contains("error openvpn: Options error: Unrecognized option or missing or extra parameter(s) in /config/provider.ovpn:3: foo-bar (2.6.14)"),
                "OpenVPN's lines name the user's file too")
        #expect(log.written.contains("warning openvpn: Use --help for more information."))
        backend.close()
        #expect(access(directory + "/openvpn.conf", F_OK) != 0, "removed at exit")
    }
}

private struct SystemFailure: Error {}
