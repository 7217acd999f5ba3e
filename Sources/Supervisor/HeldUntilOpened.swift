import Synchronization

/// Passes items on from any thread, in order, but holds them until `open()`: the netlink
/// watcher's reports are posted straight from its thread into the inbox, yet only after the loaded
/// configuration, by which the interpreter translates them (a report it gets before is dropped
/// unread: the start-up dump of an address already present, say).
final class HeldUntilOpened<Item: Sendable>: Sendable {
    private enum Gate {
        case holding([Item])
        case open
    }

    private let gate = Mutex(Gate.holding([]))
    private let pass: @Sendable (Item) -> Void

    init(passingTo pass: @escaping @Sendable (Item) -> Void) {
        self.pass = pass
    }

    func send(_ item: Item) {
        gate.withLock { gate in
            switch gate {
            case .open:
                // Under the lock, so that no item overtakes those `open()` is still passing on.
                pass(item)
            case .holding(var held):
                gate = .holding([])  // leaves `held` the array's only owner: appending copies nothing
                held.append(item)
                gate = .holding(held)
            }
        }
    }

    /// Passes on what was held, then every item as it comes. Later calls do nothing.
    func open() {
        gate.withLock { gate in
            if case .holding(let held) = gate { held.forEach(pass) }
            gate = .open
        }
    }
}
