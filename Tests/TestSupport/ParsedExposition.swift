import Supervisor
import Testing

// The Prometheus text exposition read back, for the metrics tests of SupervisorTests and
// vpnsupTests.

/// One sample line of the text format: `name{label="value",...} number`.
public struct Sample: Hashable {
    public var name: String
    public var labels: [String: String]
    public var value: Double
}

/// The exposition, read back: types by family, samples in order. Fails the test on any line that is
/// not a comment or a well-formed sample (label values here never hold quotes or commas).
public struct ParsedExposition {
    public var types: [String: String] = [:]
    public var helps: [String: String] = [:]
    public var families: [String] = []
    public var samples: [Sample] = []

    public init(_ text: String) {
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            if line.hasPrefix("# HELP ") || line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ", maxSplits: 3).map(String.init)
                guard parts.count == 4 else { Issue.record("bad comment \(line)"); continue }
                if parts[1] == "HELP" {
                    #expect(helps[parts[2]] == nil, "HELP twice for \(parts[2])")
                    helps[parts[2]] = parts[3]
                    families.append(parts[2])
                } else {
                    types[parts[2]] = parts[3]
                }
                continue
            }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                Issue.record("bad sample \(line.debugDescription)")
                continue
            }
            var name = String(line[..<space])
            var labels: [String: String] = [:]
            if let brace = name.firstIndex(of: "{"), name.hasSuffix("}") {
                for pair in name[name.index(after: brace)..<name.index(before: name.endIndex)].split(separator: ",") {
                    let keyValue = pair.split(separator: "=", maxSplits: 1)
                    labels[String(keyValue[0])] = String(keyValue[1].dropFirst().dropLast())
                }
                name = String(name[..<brace])
            }
            samples.append(Sample(name: name, labels: labels, value: value))
        }
    }

    public func value(_ family: MetricFamily, _ labels: [String: String] = [:]) -> Double? {
        let matching = samples.filter { $0.name == family.rawValue && $0.labels == labels }
        #expect(matching.count <= 1, "\(family.rawValue) \(labels) appears \(matching.count) times")
        return matching.first?.value
    }

    public func has(_ family: MetricFamily) -> Bool { helps[family.rawValue] != nil }
}

public func parse(_ bytes: [UInt8]) -> ParsedExposition { ParsedExposition(String(decoding: bytes, as: UTF8.self)) }
