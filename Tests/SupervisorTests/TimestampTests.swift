import FoundationEssentials
@testable import Supervisor
import Testing

@Suite("Status timestamps")
struct TimestampTests {
    /// The timestamp written over gmtime_r says what Foundation's ISO 8601 format style says of
    /// the second, from 1970 to 2100, leap days and the ends of years included, and gives the
    /// milliseconds the date was made with. (Foundation truncates the binary fraction, so a date
    /// made from x.999 s can print as x.998: its fractions are not the oracle.)
    @Test func sameTextAsFoundationsISO8601Style() {
        let style = Date.ISO8601FormatStyle.iso8601.year().month().day()
            .time(includingFractionalSeconds: true).timeZone(separator: .omitted)
        var generator = SystemRandomNumberGenerator()
        var milliseconds: [Int64] = [0, 999, 951_782_400_000, 951_868_799_999, 1_798_761_599_999, 4_102_444_800_000]
        for _ in 0..<2000 { milliseconds.append(Int64.random(in: 0..<4_102_444_800_000, using: &generator)) }
        for value in milliseconds {
            let (seconds, fraction) = value.quotientAndRemainder(dividingBy: 1000)
            let second = Date(timeIntervalSince1970: Double(seconds)).formatted(style)
            #expect(second.hasSuffix(".000Z"))
            let padded = String(fraction + 1000).dropFirst()
            let expected = second.dropLast(".000Z".count) + ".\(padded)Z"
            #expect(StatusBoard.timestamp(Date(timeIntervalSince1970: Double(value) / 1000)) == expected, "\(value) ms")
        }
    }

    @Test func aKnownInstant() {
        #expect(StatusBoard.timestamp(Date(timeIntervalSince1970: 1_779_102_400.123)) == "2026-05-18T11:06:40.123Z")
    }
}
