import Supervisor
import Testing
@testable import vpnsup

/// What `vpnsup status` prints of the port forwards: the first few of thousands, and the last
/// reading of PORT_FWD_FILE.
struct StatusForwardsTextTests {
    private func snapshot() -> StatusSnapshot {
        StatusSnapshot(since: "2026-12-06T12:00:00.000Z", pid: 42, startedAt: "2026-12-06T11:59:59.000Z")
    }

    @Test func aFewForwardsAreListedThousandsAreCounted() {
        var status = snapshot()
        status.portForwards = ["8080/tcp -> 172.22.0.10:80", "9000/udp -> 172.22.0.11:9000"]
        #expect(StatusReport.human(status).contains("forwards    8080/tcp -> 172.22.0.10:80, 9000/udp -> 172.22.0.11:9000\n"))
        status.portForwards = (0..<10_000).map { "\(30_000 + $0)/tcp -> 172.22.0.10:5002" }
        let text = StatusReport.human(status)
        #expect(text.contains("forwards    10000: 30000/tcp -> 172.22.0.10:5002, 30001/tcp -> 172.22.0.10:5002, "
            + "30002/tcp -> 172.22.0.10:5002, 30003/tcp -> 172.22.0.10:5002, ... (status --json lists them all)\n"))
        #expect(!text.contains("30004/tcp"))
    }

    @Test func theFilesLastReadingIsShown() {
        var status = snapshot()
        #expect(!StatusReport.human(status).contains("fwd file"))
        status.portForwardFile = "/etc/vpnsup/forwards"
        status.forwardsChanges = 2
        status.lastForwardsChange = .init(at: "2026-12-06T12:05:00.000Z", accepted: false,
                                          message: "PORT_FWD_FILE=/etc/vpnsup/forwards:3 has 'x', which is not [PUBLIC_PORT:]IP:PORT[/tcp|/udp]")
        #expect(StatusReport.human(status).contains("fwd file    /etc/vpnsup/forwards, 2 changes; last read at 2026-12-06T12:05:00.000Z "
            + "refused: PORT_FWD_FILE=/etc/vpnsup/forwards:3 has 'x', which is not [PUBLIC_PORT:]IP:PORT[/tcp|/udp]\n"))
    }
}
