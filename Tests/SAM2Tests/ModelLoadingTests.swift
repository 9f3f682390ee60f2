import Foundation
import Kernels
import TensorIO
import XCTest
@testable import SAM2

/// Checkpoint validation and bad input: clear errors naming what is wrong, never a crash.
final class ModelLoadingTests: XCTestCase {
    static var fixtureDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/tiny/micro")
    }

    func microWeights() throws -> (InMemoryWeights, SAM2Configuration) {
        let archive = try TensorArchives.open(Self.fixtureDirectory.appendingPathComponent("model.pt"))
        var tensors: [String: Tensor] = [:]
        for name in archive.tensorNames { tensors[name] = try archive.tensor(named: name) }
        let config = try JSONDecoder().decode(SAM2Configuration.self, from: Data(contentsOf: Self.fixtureDirectory.appendingPathComponent("config.json")))
        return (InMemoryWeights(tensors), config)
    }

    func testMissingOrMisshapenTensorsAreNamed() throws {
        let (weights, config) = try microWeights()
        XCTAssertNoThrow(try SAM2Model(weights: weights, configuration: config))
        for key in ["image_encoder.trunk.blocks.3.attn.qkv.weight", "sam_mask_decoder.transformer.layers.1.norm4.bias",
                    "sam_prompt_encoder.point_embeddings.2.weight", "no_mem_embed", "image_encoder.neck.convs.0.conv.weight"] {
            var missing = weights
            missing.tensors[key] = nil
            XCTAssertThrowsError(try SAM2Model(weights: missing, configuration: config)) { error in
                XCTAssertTrue("\(error)".contains(key), "\(error)")
            }
            var misshapen = weights
            misshapen.tensors[key] = Tensor(shape: [3], repeating: 0)
            XCTAssertThrowsError(try SAM2Model(weights: misshapen, configuration: config)) { error in
                XCTAssertTrue("\(error)".contains(key) && "\(error)".contains("[3]"), "\(error)")
            }
        }
    }

    func testVideoKeysAreIgnoredAndPresetsAreRecognised() throws {
        let (weights, config) = try microWeights()
        var extra = weights
        extra.tensors["memory_attention.layers.0.self_attn.q_proj.weight"] = Tensor(shape: [2, 2], repeating: 1)
        XCTAssertNoThrow(try SAM2Model(weights: extra, configuration: config))
        // The micro model is no preset: inference must say so rather than guess.
        XCTAssertThrowsError(try CheckpointInspector.inferPreset(weights)) { XCTAssertTrue("\($0)".contains("matches no SAM2 preset")) }
        XCTAssertThrowsError(try CheckpointInspector.inferPreset(InMemoryWeights([:]))) { XCTAssertTrue("\($0)".contains("not a SAM2 checkpoint")) }
        // Shapes of a tiny 2.1 trunk (96 channels, 12 blocks, with the 2.1-only key) give the tiny preset.
        var shapes: [String: Tensor] = ["image_encoder.trunk.patch_embed.proj.weight": Tensor(shape: [96, 3, 7, 7]),
                                        "no_obj_embed_spatial": Tensor(shape: [1, 64])]
        for i in 0..<12 { shapes["image_encoder.trunk.blocks.\(i).norm1.weight"] = Tensor(shape: [1]) }
        XCTAssertEqual(try CheckpointInspector.inferPreset(InMemoryWeights(shapes)), .tiny)
        shapes["no_obj_embed_spatial"] = nil
        XCTAssertEqual(try CheckpointInspector.inferPreset(InMemoryWeights(shapes)), .tiny20)
    }

    func testHuggingFaceNamedSafetensorsGiveTheSameModel() throws {
        // Written by tools/parity/make_hf_fixture.py, whose renaming is checked against transformers.
        let config = try JSONDecoder().decode(SAM2Configuration.self, from: Data(contentsOf: Self.fixtureDirectory.appendingPathComponent("config.json")))
        let official = try SAM2Model.load(contentsOf: Self.fixtureDirectory.appendingPathComponent("model.pt"), configuration: config)
        let transformers = try SAM2Model.load(contentsOf: Self.fixtureDirectory.appendingPathComponent("model_hf.safetensors"), configuration: config)
        var pixels = [UInt8](repeating: 0, count: 48 * 40 * 3)
        for i in pixels.indices { pixels[i] = UInt8((i * 37) % 251) }
        let image = try RGBImage(width: 48, height: 40, pixels: pixels)
        let a = try official.encode(image), b = try transformers.encode(image)
        XCTAssertEqual(a, b, "same weights under other names must give identical features")
        let prompt = Prompt(points: [PointPrompt(x: 20, y: 10, label: 1)], box: BoxPrompt(x0: 5, y0: 5, x1: 30, y1: 30))
        XCTAssertEqual(try official.predict(a, prompt: prompt, multimask: true).lowResolutionLogits,
                       try transformers.predict(b, prompt: prompt, multimask: true).lowResolutionLogits)
    }

    func testDamagedCheckpointFilesGiveErrors() throws {
        let source = try Data(contentsOf: Self.fixtureDirectory.appendingPathComponent("model.pt"))
        let config = try JSONDecoder().decode(SAM2Configuration.self, from: Data(contentsOf: Self.fixtureDirectory.appendingPathComponent("config.json")))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sam2-damaged-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for cut in [0, 10, 100, source.count / 3, source.count - 30] {
            let url = dir.appendingPathComponent("cut\(cut).pt")
            try source.prefix(cut).write(to: url)
            XCTAssertThrowsError(try SAM2Model.load(contentsOf: url, configuration: config), "cut at \(cut)") { error in
                XCTAssertTrue(error is SAM2Error, "\(type(of: error))")
                XCTAssertFalse("\(error)".contains("\n"))
            }
        }
    }

    func testBadPromptsAreRejected() throws {
        let (weights, config) = try microWeights()
        let model = try SAM2Model(weights: weights, configuration: config)
        let image = try RGBImage(width: 32, height: 24, pixels: [UInt8](repeating: 128, count: 32 * 24 * 3))
        let features = try model.encode(image)
        XCTAssertThrowsError(try model.predict(features, prompt: Prompt(), multimask: false)) { XCTAssertTrue("\($0)".contains("empty prompt")) }
        XCTAssertThrowsError(try model.predict(features, prompt: Prompt(points: [PointPrompt(x: 1, y: 1, label: 3)]), multimask: false))
        XCTAssertThrowsError(try model.predict(features, prompt: Prompt(points: [PointPrompt(x: .nan, y: 1, label: 1)]), multimask: false))
        XCTAssertThrowsError(try model.predict(features, prompt: Prompt(maskInput: Tensor(shape: [1, 64, 64])), multimask: false))
        XCTAssertThrowsError(try RGBImage(width: 2, height: 2, pixels: [1, 2, 3]))
        // Points outside the image are legal for SAM2 (the official predictor accepts them).
        let outside = try model.predict(features, prompt: Prompt(points: [PointPrompt(x: -5, y: 40, label: 1)]), multimask: true)
        XCTAssertEqual(outside.count, 3)
        XCTAssertEqual(outside.masks.count, 3 * 24 * 32)
    }
}
