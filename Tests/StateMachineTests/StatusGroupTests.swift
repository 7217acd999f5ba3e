import Testing
@testable import StateMachine

@Suite("STATUS_GROUP")
struct StatusGroupTests {
    static let base = ["CONFIG": "/config/a.ovpn", "IP_ADDR": "172.22.0.1/24"]

    @Test func unsetMeansRootOnly() throws {
        #expect(try Configuration(Self.base).statusGroup == nil)
    }

    @Test(arguments: ["vpnstatus", "adm", "_status", "web-ops.1", "1000", "0"])
    func namesAndIdsAreAccepted(_ group: String) throws {
        var environment = Self.base
        environment["STATUS_GROUP"] = group
        #expect(try Configuration(environment).statusGroup == group)
    }

    @Test(arguments: ["-rf", "a b", "ops\nKILL", "op;s", "grüppe", String(repeating: "g", count: 33), "99999999999"])
    func anythingElseIsAConfigurationErrorNamingIt(_ group: String) {
        var environment = Self.base
        environment["STATUS_GROUP"] = group
        #expect {
            try Configuration(environment)
        } throws: { error in
            guard let error = error as? ConfigurationError else { return false }
            return error.variable == "STATUS_GROUP" && error.description.contains("STATUS_GROUP=")
        }
    }
}
