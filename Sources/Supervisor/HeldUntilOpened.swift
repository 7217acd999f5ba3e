import Synchronization

/// Takes items from any thread and holds them until `open(passingTo:)`, then passes them on in
/// order, and every later one as it comes. Watchers post into the inbox through one of these when
/// they start before the inbox may take their reports: the signal watcher starts before the
/// supervisor exists, and the netlink watcher's reports must follow the loaded configuration,
/// by which the interpreter translates them (one it gets before is dropped unread: the start-up
/// dump of an address already present, say).
public final class HeldUntilOpened<Item: Sendable>: Sendable {
    private enum Gate {
        case holding([Item])
        case open(@Sendable (Item) -> Void)
    }

    private let gate = Mutex(Gate.holding([]))

    public init() {}

    public func send(_ item: Item) {
        gate.withLock { gate in
            switch gate {
            case .open(let pass):
                // Under the lock, so that no item overtakes those `open` is still passing on.
                pass(item)
            case .holding(var held):
                gate = .holding([])  // leaves `held` the array's only owner: appending copies nothing
                held.append(item)
                gate = .holding(held)
            }
        }
    }

    /// Passes on what was held, then every item as it comes, to `pass`. Only the first call
    /// counts.
    public func open(passingTo pass: @escaping @Sendable (Item) -> Void) {
        gate.withLock { gate in
            guard case .holding(let held) = gate else { return }
            held.forEach(pass)
            gate = .open(pass)
        }
    }
}
