import CLibFuzzer
import Glibc

// Shared by the libFuzzer targets (fuzz/run.sh builds them with -sanitize=fuzzer,address).
//
// SwiftPM links an executable with `--defsym main=<Module>_main`, so libFuzzer's own main never
// runs: each target's main.swift hands its LLVMFuzzerTestOneInput to libFuzzer's driver instead.

/// Runs libFuzzer with the process's arguments (corpus directories, -max_total_time=...) and
/// exits with its status.
public func runLibFuzzer(_ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, testOneInput))
}

/// The input as bytes (libFuzzer may pass a null pointer with size 0).
public func fuzzInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}

/// A property every input must keep. A violation traps, which libFuzzer records as a crash with
/// the input that caused it.
public func invariant(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                      file: StaticString = #file, line: UInt = #line) {
    if !condition() { fatalError("invariant broken: \(message())", file: file, line: line) }
}
