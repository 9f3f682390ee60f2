import Foundation
import Kernels
import TensorIO
import XCTest
@testable import SAM2

/// The automatic mask generator's parts: the batched decoder against decoding one by one, the
/// point grid against numpy's arithmetic, NMS, RLE and the low-resolution cleanup. Parity of the
/// whole generator with the official one runs in `tools/parity/amg_parity.py`.
final class AutomaticMaskTests: XCTestCase {
    static var micro: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/tiny/micro") }

    func microPrepared() throws -> (SAM2Model, PreparedFeatures) {
        let config = try JSONDecoder().decode(SAM2Configuration.self, from: Data(contentsOf: Self.micro.appendingPathComponent("config.json")))
        let model = try SAM2Model.load(contentsOf: Self.micro.appendingPathComponent("model.pt"), configuration: config)
        var rng = SplitMix64(state: 4)
        let (w, h) = (160, 120)
        let pixels = (0..<(w * h * 3)).map { i in UInt8(truncatingIfNeeded: (i / 3 % w) * 2 + Int(rng.next() % 40)) }
        let features = try model.encode(try RGBImage(width: w, height: h, pixels: pixels))
        return (model, try model.prepare(features))
    }

    func testBatchedDecodingGivesTheLogitsOfDecodingOneByOne() throws {
        let (model, prepared) = try microPrepared()
        var rng = SplitMix64(state: 11)
        var prompts = (0..<9).map { _ in
            Prompt(points: [PointPrompt(x: Float(rng.next() % 160), y: Float(rng.next() % 120), label: 1)])
        }
        // Mask inputs (the m2m pass) and a two-point prompt take the other decoder paths.
        let side = SAM2Configuration.lowResolutionMaskSize
        let maskInput = Tensor(shape: [side, side], scalars: (0..<(side * side)).map { Float(($0 % 37) - 18) / 3 })
        prompts.append(Prompt(points: [PointPrompt(x: 50, y: 40, label: 1)], maskInput: maskInput))
        prompts.append(Prompt(points: [PointPrompt(x: 20, y: 30, label: 1), PointPrompt(x: 90, y: 70, label: 0)]))
        for multimask in [true, false] {
            let batched = try model.decodeLogits(prepared, prompts: prompts, multimask: multimask)
            XCTAssertEqual(batched.count, prompts.count)
            for (prompt, b) in zip(prompts, batched) {
                let single = try model.decodeLogits(prepared, prompt: prompt, multimask: multimask)
                XCTAssertEqual(b.scores, single.scores)
                XCTAssertEqual(b.logits.shape, single.logits.shape)
                XCTAssertEqual(b.logits.toArray(), single.logits.toArray(), "batched logits differ (multimask \(multimask))")
            }
        }
        XCTAssertThrowsError(try model.decodeLogits(prepared, prompts: [Prompt()], multimask: true))
    }

    func testPointGridFollowsNumpy() {
        let g32 = PointGrid.regular(pointsPerSide: 32)
        XCTAssertEqual(g32.count, 1024)
        XCTAssertEqual(g32[0].x, 1.0 / 64)
        XCTAssertEqual(g32[1].x, 3.0 / 64)
        XCTAssertEqual(g32[1].y, 1.0 / 64)
        XCTAssertEqual(g32[32].y, 3.0 / 64)  // y outer, x inner
        XCTAssertEqual(g32[1023].x, 63.0 / 64)
        // n = 24 is not a binary fraction: numpy's i·step + start, last value exactly stop.
        let g24 = PointGrid.regular(pointsPerSide: 24)
        let start = 1.0 / 48, step = (1 - 1.0 / 48 - start) / 23
        XCTAssertEqual(g24[5].x, 5 * step + start)
        XCTAssertEqual(g24[23].x, 1 - 1.0 / 48)
        XCTAssertEqual(PointGrid.regular(pointsPerSide: 1).map(\.x), [0.5])
    }

    func testNMSKeepsByScoreAndBreaksTiesByIndex() {
        let boxes = [MaskBox(x0: 0, y0: 0, x1: 10, y1: 10), MaskBox(x0: 1, y0: 1, x1: 10, y1: 10),
                     MaskBox(x0: 50, y0: 50, x1: 60, y1: 60), MaskBox(x0: 50, y0: 50, x1: 60, y1: 60),
                     MaskBox(x0: 5, y0: 5, x1: 5, y1: 9)]
        // 0 and 1 overlap (IoU 81/100 > 0.7): the higher score wins; 2 and 3 tie in score and
        // box: the lower index wins; the zero-area box 4 gives NaN IoU and survives.
        XCTAssertEqual(BoxNMS.keep(boxes: boxes, scores: [0.5, 0.9, 0.7, 0.7, 0.1], threshold: 0.7), [1, 2, 4])
        XCTAssertEqual(BoxNMS.keep(boxes: boxes, scores: [0.5, 0.9, 0.7, 0.7, 0.1], threshold: 0.85), [1, 2, 0, 4])
        // IoU exactly at the threshold is kept (strict `>`).
        let touching = [MaskBox(x0: 0, y0: 0, x1: 4, y1: 1), MaskBox(x0: 0, y0: 0, x1: 2, y1: 1)]
        XCTAssertEqual(BoxNMS.keep(boxes: touching, scores: [1, 0.5], threshold: 0.5), [0, 1])
        XCTAssertEqual(BoxNMS.keep(boxes: touching, scores: [1, 0.5], threshold: 0.49), [0])
    }

    func testColumnMajorRLEStartsWithZerosAndRunsDownColumns() {
        // 3 × 2 (w × h): pixels (0,0), (1,0), (1,1) set.
        let runs: MaskUpsampling.Runs = ([0, 1], [2, 2], [0, 1, 2])
        let mask = AutomaticMask(runs: runs, width: 3, height: 2, box: MaskBox(x0: 0, y0: 0, x1: 1, y1: 1), area: 3,
                                 predictedIoU: 1, stabilityScore: 1, point: (0, 0))
        // Column-major: (0,0)=1 (0,1)=0 | (1,0)=1 (1,1)=1 | (2,0)=0 (2,1)=0.
        XCTAssertEqual(mask.columnMajorRLE, [0, 1, 1, 2, 2])
        let empty = AutomaticMask(runs: ([], [], [0, 0, 0]), width: 3, height: 2, box: MaskBox(x0: 0, y0: 0, x1: 0, y1: 0), area: 0,
                                  predictedIoU: 1, stabilityScore: 1, point: (0, 0))
        XCTAssertEqual(empty.columnMajorRLE, [6])
    }

    func testCleanupFillsSmallHolesAndRemovesSmallIslands() {
        let side = 8
        var logits = [Float](repeating: -1, count: side * side)
        for y in 1...5 { for x in 1...5 { logits[y * side + x] = 2 } }   // a 5×5 square
        logits[3 * side + 3] = -0.5                                      // a one-pixel hole
        logits[7 * side + 7] = 3                                         // a one-pixel island
        logits[0 * side + 7] = 3; logits[1 * side + 6] = 3               // a diagonal pair: one 8-connected island of 2
        var cleaned = logits
        LowResolutionCleanup.apply(&cleaned, side: side, maxHoleArea: 1, maxSprinkleArea: 1)
        XCTAssertEqual(cleaned[3 * side + 3], 10)
        XCTAssertEqual(cleaned[7 * side + 7], -10)
        XCTAssertEqual(cleaned[0 * side + 7], 3, "an island of 2 is above the area")
        XCTAssertEqual(cleaned[0], -1, "the outer background is one large component")
        var none = logits
        LowResolutionCleanup.apply(&none, side: side, maxHoleArea: 0, maxSprinkleArea: 0)
        XCTAssertEqual(none, logits)
    }

    func testGeneratorKeepsFilteredMasksInNMSOrder() throws {
        let (model, prepared) = try microPrepared()
        var options = AutomaticMaskOptions()
        options.pointsPerSide = 6
        options.pointsPerBatch = 7  // batches that split points unevenly
        options.predictedIoUThreshold = 0
        options.stabilityScoreThreshold = 0
        options.boxNMSThreshold = 1  // random weights: near-full masks with one box; keep them all
        let all = try AutomaticMaskGenerator(model: model, options: options).generate(prepared)
        XCTAssertFalse(all.isEmpty)
        // A stability threshold between the scores seen keeps exactly the masks at or above it.
        let median = (all.map(\.stabilityScore).max() ?? 0) / 2
        XCTAssertGreaterThan(median, 0)
        options.stabilityScoreThreshold = Double(median)
        let masks = try AutomaticMaskGenerator(model: model, options: options).generate(prepared)
        XCTAssertFalse(masks.isEmpty)
        XCTAssertLessThan(masks.count, all.count)
        XCTAssertEqual(masks.map(\.predictedIoU), masks.map(\.predictedIoU).sorted(by: >))
        for m in masks {
            XCTAssertGreaterThanOrEqual(m.stabilityScore, median)
            let area = zip(m.runs.starts, m.runs.ends).reduce(0) { $0 + Int($1.1 - $1.0) }
            XCTAssertEqual(m.area, area)
            XCTAssertEqual(m.columnMajorRLE.enumerated().filter { $0.offset % 2 == 1 }.reduce(0) { $0 + $1.element }, area)
            XCTAssertEqual(m.runs.rowOffsets.count, m.height + 1)
        }
        // Larger batches change nothing.
        options.pointsPerBatch = 64
        let again = try AutomaticMaskGenerator(model: model, options: options).generate(prepared)
        XCTAssertEqual(again.map(\.predictedIoU), masks.map(\.predictedIoU))
        XCTAssertEqual(again.map(\.box), masks.map(\.box))
        options.pointsPerSide = nil
        XCTAssertThrowsError(try AutomaticMaskGenerator(model: model, options: options))
    }
}
