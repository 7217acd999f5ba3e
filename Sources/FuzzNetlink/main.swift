import FuzzSupport
import StateMachine
import Watchers

// Netlink decoding: arbitrary bytes as a buffer of rtnetlink messages, then as nf_tables
// notifications. Lengths in headers and attributes may lie; decoding must never read past them.
// The input is decoded twice by the same decoder, as a second read of the socket would be.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNetlink(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)

    var links = NetlinkDecoder()
    for _ in 0..<2 {
        for event in links.decode(bytes) {
            switch event {
            case .address(_, _, let address, _):
                invariant((0...32).contains(address.prefixLength), "prefix /\(address.prefixLength)")
            case .route(let destination, _, _, _):
                invariant(destination.address.value & ~destination.mask == 0, "route \(destination) has host bits")
            case .link(let name, let index, _), .linkRemoved(let name, let index):
                invariant(!name.isEmpty && index > 0, "link \(name.debugDescription) index \(index)")
            case .neighbour(_, let index, _, _):
                invariant(index > 0, "neighbour on index \(index)")
            case .synchronized:
                break
            }
        }
    }

    var tables = NftablesDecoder(table: "vpnsup")
    _ = tables.decode(bytes)
    _ = tables.decode(bytes)
    _ = tables.flush()
    return 0
}

runLibFuzzer(fuzzNetlink)
