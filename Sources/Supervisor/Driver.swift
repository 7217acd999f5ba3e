import FoundationEssentials
import StateMachine
import Watchers

/// The interpreter of `vpnsup run`: takes one input at a time, translates it into machine events,
/// lets the machine decide, and has the effects perform the actions it returned, in order; their results are the next events, handled before any further input (the loop
/// is `Interpreter`'s, shared with `vpnsup join`). It decides nothing itself: what it keeps
/// besides the machine is the record (status, log lines), which is a projection of what the
/// machine did.
public actor Driver: Interpreter {
    var machine: Machine
    private var record: SupervisorRecord
    private let effects: any Effects
    private let inbox: Inbox
    private let log: SupervisorLog
    private let board: StatusBoard
    private let notifier: any ServiceNotifying
    /// The metrics only the stream of events can tell (transitions, restarts, probe failures).
    private let metrics: MetricsLedger?
    /// Set by the machine's `exit` action; nothing is taken in after it.
    public internal(set) var exitCode: Int32?

    public init(machine: Machine, effects: any Effects, inbox: Inbox, log: SupervisorLog, board: StatusBoard,
                notifier: any ServiceNotifying, metrics: MetricsLedger? = nil) {
        self.metrics = metrics
        self.machine = machine
        self.effects = effects
        self.inbox = inbox
        self.log = log
        self.board = board
        self.notifier = notifier
        record = SupervisorRecord(board.current)
    }

    /// The machine as it is now.
    public var current: Machine { machine }

    /// Runs until the machine exits; returns its exit code. The effects' tasks (`scope`) and the
    /// watchdog run in a task group owned by this call: the exit cancels them and waits for them.
    /// The first thing the machine does is ask for the lockdown.
    public func run(scope: TaskScope, watchdog: Duration?) async -> Int32 {
        notifier.status("\(machine.state)")
        return await withDiscardingTaskGroup(returning: Int32.self) { group in
            group.addTask { await scope.run() }
            if let watchdog {
                log.log(.info, "systemd watchdog: WATCHDOG=1 every \(SupervisorRecord.milliseconds(watchdog / 2)) ms")
                // A timer, not a check of state: the tick is answered only if the interpreter
                // gets to run it, so a wedged interpreter stops the pings.
                group.addTask { [inbox] in
                    while !Task.isCancelled {
                        try? await Task.sleep(for: watchdog / 2)
                        inbox.post(.watchdog)
                    }
                }
            }
            await step(.event(.start))
            if exitCode == nil {
                for await input in inbox.inputs {
                    await step(input)
                    if exitCode != nil { break }
                }
            }
            group.cancelAll()
            return exitCode ?? ExitCode.unavailable
        }
    }

    /// Takes one input: translates it and handles its events, with the results of every action
    /// they lead to, before returning.
    public func step(_ input: Input) async {
        guard exitCode == nil else { return }
        if case .watchdog = input {
            notifier.watchdog()
            return
        }
        let translation = InputTranslator.translate(input, for: machine)
        translation.notes.forEach(log.log)
        if let report = translation.report {
            record.observed(report, by: machine)
            publish()
        }
        for event in translation.events {
            await interpret(event)
            if exitCode != nil { return }
        }
    }

    // MARK: Interpreter

    func decided(_ event: Event, before: Machine, actions: [Action]) {
        metrics?.record(event, from: before.state, to: machine.state)
        let (notes, notices) = record.handled(event, before: before, after: machine, actions: actions, at: now())
        if machine.isConfigured, !before.isConfigured { log.open() }
        notes.forEach(log.log)
        for notice in notices {
            switch notice {
            case .status(let text): notifier.status(text)
            case .ready: notifier.ready()
            }
        }
        publish()
    }

    func perform(_ action: Action) async -> [Event] {
        await effects.perform(action, for: machine)
    }

    func perform(_ actions: [Action]) async -> [PerformedAction<Event>] {
        await effects.perform(actions, for: machine)
    }

    func performed(_ action: Action, results: [Event], elapsed: Duration) {
        record.performed(action, results: results, elapsed: elapsed, at: now()).forEach(log.log)
    }

    func exitCode(of action: Action) -> Int32? {
        if case .exit(let code, _) = action { code } else { nil }
    }

    func exiting(with code: Int32) {
        notifier.stopping()
        publish()
    }

    func settled() { publish() }

    private func publish() {
        let snapshot = record.snapshot
        board.update { $0 = snapshot }
    }

    private func now() -> String { StatusBoard.timestamp(Date()) }
}
