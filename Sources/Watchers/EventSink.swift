/// Where a watcher's reader thread hands its events, in order: an `AsyncStream` for a consumer
/// that iterates (tests), or a function called on the reader's thread. The function suits a
/// receiver that is itself a queue, such as the inboxes of `run` and `join`: each event is posted
/// straight into it, instead of waking a task that only forwards it (one thread hand-over per
/// event instead of two: the forwarding hop was over a quarter of the CPU an event storm costs).
public struct EventSink<Element: Sendable>: Sendable {
    /// Hands over one event; false once nobody takes them any more, and the watcher stops.
    let deliver: @Sendable (Element) -> Bool
    /// Called once when the reader ends.
    let finish: @Sendable () -> Void

    /// Events go to `receive`, on the reader's thread: it must not block.
    public static func calling(_ receive: @escaping @Sendable (Element) -> Void) -> EventSink {
        EventSink(deliver: { receive($0); return true }, finish: {})
    }

    /// Events go to the returned stream, unbounded (an event dropped would be a change missed);
    /// when its consumer goes away, `onTermination` runs (the watcher's stop request).
    static func stream(onTermination: (@Sendable () -> Void)? = nil) -> (AsyncStream<Element>, EventSink) {
        let (events, continuation) = AsyncStream.makeStream(of: Element.self, bufferingPolicy: .unbounded)
        if let onTermination { continuation.onTermination = { _ in onTermination() } }
        let sink = EventSink(deliver: { element in
            if case .terminated = continuation.yield(element) { return false }
            return true
        }, finish: { continuation.finish() })
        return (events, sink)
    }

    /// The empty stream of a watcher whose events go to a receiver.
    static var none: AsyncStream<Element> { AsyncStream { $0.finish() } }
}
