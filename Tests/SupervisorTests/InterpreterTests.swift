import StateMachine
@testable import Supervisor
import Testing

/// The interpreter's loop: one decision's actions handed to the effects at once, in order, their
/// results handled after them, and nothing performed after the action that ends the process.
@Suite("Interpreter")
struct InterpreterTests {
    @Test func eachDecisionIsHandedToTheEffectsAtOnceInOrder() async throws {
        let world = World()
        await world.bringUp()
        let handOvers = await world.effects.handOvers
        // The start's decision: the lockdown, then loading; loading's report is the next decision.
        #expect(handOvers.first == [.applyFirewall(.lockdown), .loadConfiguration])
        #expect(handOvers.flatMap { $0 } == (await world.actions))
        #expect(handOvers.count < (await world.actions).count, "a decision of several actions is one hand-over")
        #expect(!handOvers.contains([]), "a decision without actions costs no hand-over")
    }

    /// A machine that decides `[step, end, step]` on `.go` and counts its events.
    struct ScriptedMachine: InterpretedMachine {
        enum Event: Sendable, Equatable { case go, stepped(Int) }
        enum Action: Sendable, Equatable { case step(Int), end }
        var seen: [Event] = []
        mutating func handle(_ event: Event) -> [Action] {
            seen.append(event)
            return event == .go ? [.step(1), .end, .step(2)] : []
        }
    }

    actor ScriptedInterpreter: Interpreter {
        var machine = ScriptedMachine()
        var exitCode: Int32?
        var performedActions: [ScriptedMachine.Action] = []
        var exitedWith: Int32?

        func decided(_ event: ScriptedMachine.Event, before: ScriptedMachine, actions: [ScriptedMachine.Action]) {}
        func perform(_ action: ScriptedMachine.Action) async -> [ScriptedMachine.Event] {
            performedActions.append(action)
            if case .step(let n) = action { return [.stepped(n)] }
            return []
        }
        func performed(_ action: ScriptedMachine.Action, results: [ScriptedMachine.Event], elapsed: Duration) {}
        func exitCode(of action: ScriptedMachine.Action) -> Int32? { action == .end ? 3 : nil }
        func exiting(with code: Int32) { exitedWith = code }
        func settled() {}
    }

    @Test func nothingAfterTheEndIsPerformedOrHandled() async {
        let interpreter = ScriptedInterpreter()
        await interpreter.interpret(.go)
        #expect(await interpreter.performedActions == [.step(1), .end])
        #expect(await interpreter.exitedWith == 3)
        #expect(await interpreter.exitCode == 3)
        // The end came before the first action's report was handled.
        #expect(await interpreter.machine.seen == [.go])
    }
}
