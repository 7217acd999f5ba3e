import Glibc
import SystemSupport
import Testing

/// SocketFlags writes Linux's values down rather than taking glibc's names: the kernel must make
/// what each one says.
@Suite("SocketFlags")
struct SocketFlagsTests {
    private func socketType(_ fd: Int32) -> Int32 {
        var type: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        #expect(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0)
        return type
    }

    @Test(arguments: [(SocketFlags.stream, AF_UNIX), (SocketFlags.datagram, AF_UNIX), (SocketFlags.stream, AF_INET),
                      (SocketFlags.datagram, AF_INET)])
    func theKernelMakesWhatTheFlagsSay(_ type: Int32, _ family: Int32) throws {
        let fd = socket(family, type | SocketFlags.closeOnExec | SocketFlags.nonBlocking, 0)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(socketType(fd) == type)
        #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC != 0)
        #expect(fcntl(fd, F_GETFL) & O_NONBLOCK != 0)
    }

    @Test func withoutTheFlagsNeitherIsSet() throws {
        let fd = socket(AF_UNIX, SocketFlags.stream, 0)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC == 0)
        #expect(fcntl(fd, F_GETFL) & O_NONBLOCK == 0)
    }
}
