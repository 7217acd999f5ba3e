extension Array where Element == UInt8 {
    /// A buffer of `count` bytes for the kernel to fill (read, recv): its bytes are not zeroed,
    /// so its pages become resident only as data is written to them. Zeroed, every 64 KiB buffer
    /// of a reader cost 64 KiB of resident memory at once, though a message is rarely more than a
    /// page. Read only the bytes a call reports written.
    public init(receiving count: Int) {
        self.init(unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
    }
}
