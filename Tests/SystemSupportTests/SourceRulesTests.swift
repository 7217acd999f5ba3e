import Foundation
import Testing

/// Rules about the sources themselves that the compiler does not enforce.
@Suite struct SourceRulesTests {
    private static let sources = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Sources")

    /// A Swift file importing CNetlink must not name glibc's SOCK_* or MSG_* constants (the
    /// shim's C helpers do): the CNetlink headers include glibc's socket headers, and with one
    /// such file the names came and went in the module's other files, depending on how the
    /// compiler batched them (clean builds broke when a module gained files).
    @Test func filesImportingCNetlinkNameNoSocketConstants() throws {
        let files = FileManager.default.enumerator(at: Self.sources, includingPropertiesForKeys: nil)?
            .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" } ?? []
        #expect(files.count > 50, "the sources were found")
        let constant = try Regex(#"\b(SOCK|MSG)_[A-Z]+\b"#)
        var importers = 0
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            guard text.contains("import CNetlink") else { continue }
            importers += 1
            // Comments may name them.
            let code = text.split(separator: "\n").map { $0.split(separator: "//", maxSplits: 1).first ?? "" }
            for (number, line) in code.enumerated() where line.contains(constant) {
                Issue.record("\(file.lastPathComponent):\(number + 1) names a socket constant: \(line)")
            }
        }
        #expect(importers > 5)
    }
}
