import CNetlink

/// glibc's malloc gives each thread that allocates an arena of its own, up to eight per core,
/// each with its first pages touched: about a dozen threads, most of them asleep in a blocking
/// read for the process's life, cost hundreds of KiB of private memory that way. vpnsup's
/// threads allocate little and seldom, so they share one arena.
public enum MallocArenas {
    /// Call before the second thread starts.
    public static func shareOne() {
        _ = mallopt(M_ARENA_MAX, 1)
    }
}
