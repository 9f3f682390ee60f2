import XCTest
@testable import SAM2

final class ReducedPrecisionPlanTests: XCTestCase {
    func testTheStudySyntaxSpellsTheStandardPlan() throws {
        let parsed = try XCTUnwrap(ReducedPrecisionPlan(parsing: "start1,3:am;*:qam", precision: .bfloat16))
        XCTAssertEqual(parsed, .bfloat16)
        XCTAssertEqual(ReducedPrecisionPlan(parsing: "*:qapm", precision: .fixed16), .everything(in: .fixed16))
        XCTAssertNotEqual(ReducedPrecisionPlan(parsing: "*:qapm", precision: .bfloat16), .everything(in: .fixed16))  // the arithmetic counts
        for bad in ["", "*", "x:q", "1,:q", "start:q", "*:z", "1:q:a"] {
            XCTAssertNil(ReducedPrecisionPlan(parsing: bad, precision: .bfloat16), bad)
        }
    }

    func testRulesApplyInOrderByIndexStageAndAttention() throws {
        let plan = try XCTUnwrap(ReducedPrecisionPlan(parsing: "2:;global:a;start3:m;*:q", precision: .fixed16))
        XCTAssertEqual(plan.operations(block: 2, windowSize: 0), [])  // the first matching rule decides
        XCTAssertEqual(plan.operations(block: 5, windowSize: 0, startsStage: 3), [.attention])
        XCTAssertEqual(plan.operations(block: 3, windowSize: 14, startsStage: 3), [.mlp])
        XCTAssertEqual(plan.operations(block: 3, windowSize: 14, startsStage: 2), [.qkv])
        XCTAssertEqual(plan.operations(block: 4, windowSize: 14), [.qkv])
        XCTAssertEqual(ReducedPrecisionPlan(parsing: "1:q", precision: .fixed16)?.operations(block: 0, windowSize: 8), [])  // unnamed blocks stay fp32
    }

    func testTheBFloat16PlanKeepsTheFirstBlocksOfStagesOneAndThreeLinearExact() {
        let standard = ReducedPrecisionPlan.bfloat16  // what --precision bf16 runs
        XCTAssertEqual(standard.operations(block: 0, windowSize: 8, startsStage: 1), [.attention, .mlp])
        XCTAssertEqual(standard.operations(block: 3, windowSize: 14, startsStage: 3), [.attention, .mlp])
        XCTAssertEqual(standard.operations(block: 1, windowSize: 8, startsStage: 2), [.qkv, .attention, .mlp])
        XCTAssertEqual(standard.operations(block: 7, windowSize: 0), [.qkv, .attention, .mlp])
    }
}
