import Glibc

/// glibc's socket constants, named in a file that imports none of the project's C modules. A file
/// that imports CMnl (whose headers include glibc's socket headers) and names one of these makes
/// clang credit the macro to CMnl, which then hides it from the module's other files compiled in
/// the same batch: whether the build broke depended on how files fell into batches.
enum SocketFlags {
    static let stream = Int32(SOCK_STREAM.rawValue)
    static let datagram = Int32(SOCK_DGRAM.rawValue)
    static let closeOnExec = Int32(SOCK_CLOEXEC.rawValue)
    static let nonBlocking = Int32(SOCK_NONBLOCK.rawValue)
    static let noSignal = Int32(MSG_NOSIGNAL)
}
