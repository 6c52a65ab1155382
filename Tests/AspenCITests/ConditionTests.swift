import AspenCore
import Testing

@testable import AspenCI

/// The `if` language: comparisons, `&&` over `||`, parentheses, and nothing else.
struct ConditionTests {
    func holds(_ text: String, ref: String = "refs/heads/main", event: TriggerKind = .push, status: RunStatus = .success) throws -> Bool {
        try Condition(parsing: text).evaluate(in: ConditionContext(ref: ref, event: event, status: status))
    }

    @Test("comparisons of each field, equal and not equal")
    func comparisons() throws {
        #expect(try holds(#"ref == "refs/heads/main""#))
        #expect(try !holds(#"ref == "refs/heads/dev""#))
        #expect(try holds(#"ref != "refs/heads/dev""#))
        #expect(try holds(#"branch == "main""#))
        #expect(try holds(#"branch == "main""#, ref: "refs/for/main", event: .patch))
        #expect(try holds(#"branch == """#, ref: "refs/tags/v1"))
        #expect(try holds(#"event == "patch""#, event: .patch))
        #expect(try holds(#"status == "failure""#, status: .failure))
        #expect(try holds("true") && !holds("false"))
    }

    @Test(
        "truth table: && binds tighter than ||, parentheses override",
        arguments: [
            (false, false, false), (false, false, true), (false, true, false), (false, true, true), (true, false, false), (true, false, true),
            (true, true, false), (true, true, true),
        ])
    func precedence(a: Bool, b: Bool, c: Bool) throws {
        let context = ConditionContext(ref: a ? "A" : "x", event: b ? .push : .manual, status: c ? .success : .failure)
        let atoms = (#"ref == "A""#, #"event == "push""#, #"status == "success""#)
        let loose = try Condition(parsing: "\(atoms.0) || \(atoms.1) && \(atoms.2)")
        let grouped = try Condition(parsing: "(\(atoms.0) || \(atoms.1)) && \(atoms.2)")
        let leftAnd = try Condition(parsing: "\(atoms.0) && \(atoms.1) || \(atoms.2)")
        #expect(loose.evaluate(in: context) == (a || (b && c)))
        #expect(grouped.evaluate(in: context) == ((a || b) && c))
        #expect(leftAnd.evaluate(in: context) == ((a && b) || c))
    }

    @Test("the normal form: flattened lists, parentheses only where needed, and it parses back")
    func normalForm() throws {
        let condition = try Condition(parsing: #"(ref == "a" || (ref == "b" || ref == "c")) && (event == "push" && true)"#)
        #expect(
            condition
                == .all([
                    .any([.compare(.ref, .equal, "a"), .compare(.ref, .equal, "b"), .compare(.ref, .equal, "c")]), .compare(.event, .equal, "push"),
                    .constant(true),
                ]))
        #expect(condition.description == #"(ref == "a" || ref == "b" || ref == "c") && event == "push" && true"#)
        #expect(try Condition(parsing: condition.description) == condition)
        let escaped = try Condition(parsing: #"ref == "a\"b\\c""#)
        #expect(escaped == .compare(.ref, .equal, #"a"b\c"#))
        #expect(try Condition(parsing: escaped.description) == escaped)
    }

    @Test(
        "garbage is refused",
        arguments: [
            "", "ref", #"ref = "x""#, "ref == x", #"sha == "x""#, #"ref == "x" &&"#, #"(ref == "x""#, #"ref == "x")"#, #"ref == "x"#,
            #"!(ref == "x")"#, #"ref == "x" & event == "push""#, #"event == "pull""#, #"status == "ok""#, #"ref == "\n""#, "true false",
            #""x" == ref"#, "()",
        ])
    func garbage(text: String) {
        #expect(throws: PipelineError.self) { try Condition(parsing: text) }
    }

    @Test("length and depth are bounded")
    func bounds() {
        var limits = Limits()
        limits.ciConditionBytesMax = 32
        #expect(throws: PipelineError.self) { try Condition(parsing: String(repeating: "true && ", count: 5) + "true", limits: limits) }
        let deep = String(repeating: "(", count: 9) + "true" + String(repeating: ")", count: 9)
        #expect(throws: PipelineError(.overLimit, "condition '\(deep)' nests parentheses deeper than ciConditionDepthMax (8)")) {
            try Condition(parsing: deep)
        }
        let deepest = String(repeating: "(", count: 8) + "true" + String(repeating: ")", count: 8)
        #expect(throws: Never.self) { try Condition(parsing: deepest) }
    }
}
