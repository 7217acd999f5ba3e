import StateMachine

/// A pure machine an interpreter runs: events in, actions out (`Machine` for `vpnsup run`,
/// `JoinMachine` for `vpnsup join`).
public protocol InterpretedMachine: Sendable {
    associatedtype Event: Sendable
    associatedtype Action: Sendable
    mutating func handle(_ event: Event) -> [Action]
}

extension Machine: InterpretedMachine {}
extension JoinMachine: InterpretedMachine {}

/// What the interpreters of `vpnsup run` (`Driver`) and `vpnsup join` (`JoinDriver`) share: the
/// loop that lets the machine decide on one event, has the effects perform each action it
/// returned, one at a time and in order, and handles their results before anything else. Each
/// interpreter says what it records of a decision, how an action is performed, and which action
/// ends the process; it decides nothing.
protocol Interpreter: Actor {
    associatedtype Core: InterpretedMachine
    var machine: Core { get set }
    var exitCode: Int32? { get set }
    /// The machine went from `before` to `machine` on `event`, returning `actions` (not yet performed).
    func decided(_ event: Core.Event, before: Core, actions: [Core.Action])
    /// Performs `action`, decided by `machine` as it is now; returns the events that report it.
    func perform(_ action: Core.Action) async -> [Core.Event]
    func performed(_ action: Core.Action, results: [Core.Event], elapsed: Duration)
    /// The exit code when `action` ends the process, else nil.
    func exitCode(of action: Core.Action) -> Int32?
    /// The process ends with `code`: nothing is taken in any more.
    func exiting(with code: Int32)
    /// Every action of one decision has been performed.
    func settled()
}

extension Interpreter {
    /// Handles `first` and, before returning, the events every action it leads to reports.
    func interpret(_ first: Core.Event) async {
        var pending = [first]
        var next = 0
        while next < pending.count {
            let event = pending[next]
            next += 1
            let before = machine
            let actions = machine.handle(event)
            decided(event, before: before, actions: actions)
            for action in actions {
                let started = ContinuousClock.now
                let results = await perform(action)
                performed(action, results: results, elapsed: ContinuousClock.now - started)
                pending += results
                if let code = exitCode(of: action) {
                    exitCode = code
                    exiting(with: code)
                    return
                }
            }
            settled()
        }
    }
}
