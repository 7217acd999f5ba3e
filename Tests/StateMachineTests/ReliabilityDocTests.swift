import Foundation
import Testing

// docs/reliability.md's bad-input table names, for every row, the tests that back it. This keeps
// the names honest: a renamed or deleted test, or a row left without one, fails here.

private let repository = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

private func read(_ path: String) throws -> String {
    try String(contentsOf: repository.appendingPathComponent(path), encoding: .utf8)
}

/// Every Swift source under Tests/, concatenated.
private func testSources() throws -> String {
    let tests = repository.appendingPathComponent("Tests")
    let files = FileManager.default.enumerator(at: tests, includingPropertiesForKeys: nil)?
        .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" } ?? []
    return try files.map { try String(contentsOf: $0, encoding: .utf8) }.joined(separator: "\n")
}

/// The cells of the table rows (`| 1 | … |`).
private func badInputRows() throws -> [[String]] {
    try read("docs/reliability.md").split(separator: "\n")
        .filter { $0.hasPrefix("| ") && $0.dropFirst(2).first?.isNumber == true }
        .map { line in
            // `\|` is a pipe inside a cell.
            line.replacingOccurrences(of: "\\|", with: "\u{1}").split(separator: "|", omittingEmptySubsequences: false)
                .dropFirst().dropLast()
                .map { $0.replacingOccurrences(of: "\u{1}", with: "|").trimmingCharacters(in: .whitespaces) }
        }
}

/// Backticked words and double-quoted phrases of a cell, in order.
private func references(in cell: String) -> [(text: String, quoted: Bool)] {
    var result: [(String, Bool)] = []
    var current: String?
    var delimiter: Character = "`"
    for character in cell {
        if current == nil, character == "`" || character == "\"" {
            current = ""
            delimiter = character
        } else if current != nil, character == delimiter {
            result.append((current!, delimiter == "\""))
            current = nil
        } else if current != nil {
            current!.append(character)
        }
    }
    return result
}

@Suite("docs/reliability.md")
struct ReliabilityDocTests {
    @Test func theBadInputTableHasAtLeast25Rows() throws {
        let rows = try badInputRows()
        #expect(rows.count >= 25)
        #expect(rows.allSatisfy { $0.count == 6 }, "every row: #, input, example, message, exit, tests")
    }

    @Test func everyRowNamesTestsThatExist() throws {
        let sources = try testSources()
        let badInputCases = try read("Tests/vpnsupTests/BadInputTests.swift")
        // e2e.sh with the checks it sources (Tests/lab/provider-config.sh).
        let endToEnd = try read("Tests/lab/e2e.sh") + read("Tests/lab/provider-config.sh")
        for row in try badInputRows() where row.count == 6 {
            var suite: String?
            var previous: String?
            var found = 0
            for (text, quoted) in references(in: row[5]) {
                if quoted {
                    // A case of BadInputTests by name, or an e2e check by the start of its text.
                    if previous == "BadInputTests" {
                        #expect(badInputCases.contains("Case(name: \"\(text)\""), "row \(row[0]): no BadInputTests case \"\(text)\"")
                        previous = nil // one case per row; later phrases are e2e checks
                    } else {
                        // "… the lockdown table" continues the check before it: compare the words up to any "$".
                        let words = text.trimmingCharacters(in: CharacterSet(charactersIn: "… "))
                        let start = String(words.prefix { $0 != "$" }).trimmingCharacters(in: .whitespaces)
                        #expect(!start.isEmpty && endToEnd.contains(start), "row \(row[0]): no e2e check \"\(text)\"")
                    }
                    found += 1
                    continue
                }
                previous = text
                if text.hasPrefix("Fuzz") {
                    #expect(FileManager.default.fileExists(atPath: repository.appendingPathComponent("Sources/\(text)/main.swift").path),
                            "row \(row[0]): no fuzz target \(text)")
                    found += 1
                    continue
                }
                let parts = text.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
                guard parts.count == 2 else { continue }
                if !parts[0].isEmpty { suite = parts[0] }
                guard let suite, parts[1].first?.isLowercase == true else { continue }
                #expect(sources.contains("struct \(suite)"), "row \(row[0]): no suite \(suite)")
                #expect(sources.contains("func \(parts[1])("), "row \(row[0]): no test \(suite).\(parts[1])")
                found += 1
            }
            if row[5].contains("BadInputTests") && !row[5].contains("BadInputTests.") {
                #expect(row[5].contains("\""), "row \(row[0]) names BadInputTests without its case")
            }
            #expect(found > 0, "row \(row[0]) (\(row[1])) names no test")
        }
    }
}
