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
/// loop that lets the machine decide on one event, has the effects perform the actions it
/// returned, in order, and handles their results before anything else. Each
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
    /// Performs `actions` (one decision's, up to the one that ends the process) in order; returns
    /// what reported each and how long each took. By default one `perform(_:)` after another;
    /// an interpreter whose effects run on a thread of their own hands them over at once, so that
    /// a decision costs one hop to that thread and back, not one per action.
    func perform(_ actions: [Core.Action]) async -> [PerformedAction<Core.Event>]
    func performed(_ action: Core.Action, results: [Core.Event], elapsed: Duration)
    /// The exit code when `action` ends the process, else nil.
    func exitCode(of action: Core.Action) -> Int32?
    /// The process ends with `code`: nothing is taken in any more.
    func exiting(with code: Int32)
    /// Every action of one decision has been performed.
    func settled()
}

/// What performing one action reported, and how long it took.
public struct PerformedAction<Event: Sendable>: Sendable {
    public var results: [Event]
    public var elapsed: Duration

    public init(results: [Event], elapsed: Duration) {
        self.results = results
        self.elapsed = elapsed
    }
}

extension PerformedAction {
    /// Performs `actions` one after another with `perform`, timing each, in the caller's
    /// isolation (an actor's actions run back to back on its executor).
    static func each<Action: Sendable>(_ actions: [Action], isolation: isolated (any Actor)? = #isolation,
                             _ perform: (Action) async -> [Event]) async -> [PerformedAction] {
        var outcomes: [PerformedAction] = []
        for action in actions {
            let started = ContinuousClock.now
            let results = await perform(action)
            outcomes.append(PerformedAction(results: results, elapsed: ContinuousClock.now - started))
        }
        return outcomes
    }
}

extension Interpreter {
    func perform(_ actions: [Core.Action]) async -> [PerformedAction<Core.Event>] {
        await PerformedAction.each(actions) { await perform($0) }
    }

    /// Handles `first` and, before returning, the events every action it leads to reports.
    func interpret(_ first: Core.Event) async {
        var pending = [first]
        var next = 0
        while next < pending.count {
            let event = pending[next]
            next += 1
            let before = machine
            var actions = machine.handle(event)
            decided(event, before: before, actions: actions)
            // Nothing after the action that ends the process is performed.
            if let end = actions.firstIndex(where: { exitCode(of: $0) != nil }) { actions = Array(actions[...end]) }
            let outcomes = actions.isEmpty ? [] : await perform(actions)
            for (action, outcome) in zip(actions, outcomes) {
                performed(action, results: outcome.results, elapsed: outcome.elapsed)
                pending += outcome.results
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
