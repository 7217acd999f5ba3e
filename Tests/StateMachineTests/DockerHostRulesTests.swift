import StateMachine
import Testing

@Suite struct DockerHostRulesTests {
    @Test func theOriginalReadmesTwoRulesForOneBridge() throws {
        let rules = try DockerHostRules(subnet: DockerHostRules.subnet("172.22.0.0/24"), bridge: "underbridge")
        #expect(rules.rules == [
            ["!", "-s", "172.22.0.0/24", "-d", "172.22.0.0/24", "-i", "underbridge", "-o", "underbridge",
             "-m", "comment", "--comment", "vpnsup host-rules", "-j", "ACCEPT"],
            ["-s", "172.22.0.0/24", "!", "-d", "172.22.0.0/24", "-i", "underbridge", "-o", "underbridge",
             "-m", "comment", "--comment", "vpnsup host-rules", "-j", "ACCEPT"],
        ])
        #expect(rules.restoreText == """
            *filter
            :DOCKER-USER - [0:0]
            -A DOCKER-USER ! -s 172.22.0.0/24 -d 172.22.0.0/24 -i underbridge -o underbridge -m comment --comment "vpnsup host-rules" -j ACCEPT
            -A DOCKER-USER -s 172.22.0.0/24 ! -d 172.22.0.0/24 -i underbridge -o underbridge -m comment --comment "vpnsup host-rules" -j ACCEPT
            COMMIT

            """)
    }

    @Test func badSubnetsAndBridgesNameTheOption() {
        #expect(throws: ConfigurationError("--subnet", "172.22.0.1/24", "has host bits set (the network is 172.22.0.0/24)")) {
            try DockerHostRules.subnet("172.22.0.1/24")
        }
        #expect(throws: ConfigurationError("--subnet", "garbage", "is not an IPv4 network with prefix length, e.g. 172.22.0.0/24")) {
            try DockerHostRules.subnet("garbage")
        }
        #expect(throws: ConfigurationError.self) {
            try DockerHostRules(subnet: DockerHostRules.subnet("172.22.0.0/24"), bridge: "a-bridge-name-too-long")
        }
        #expect(throws: ConfigurationError.self) {
            try DockerHostRules(subnet: DockerHostRules.subnet("172.22.0.0/24"), bridge: "br 0")
        }
    }
}
