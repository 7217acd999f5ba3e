import Glibc

/// glibc's socket types and flags, as Linux defines them on x86-64 and arm64 (asm-generic: the
/// types are 1 and 2, the flags are O_CLOEXEC and O_NONBLOCK). They are not taken from glibc's
/// `__socket_type`: a file that imports a project C module (whose headers include glibc's socket
/// headers) and names one of them makes clang credit the name to that module, which then hides it
/// from the other files compiled in the same batch. Whether a build broke depended on how files
/// fell into batches (a release build of the fuzz targets lost SOCK_CLOEXEC); every module names
/// them through here.
public enum SocketFlags {
    public static let stream: Int32 = 1
    public static let datagram: Int32 = 2
    public static let closeOnExec: Int32 = O_CLOEXEC
    public static let nonBlocking: Int32 = O_NONBLOCK
    public static let noSignal = Int32(MSG_NOSIGNAL)
}
