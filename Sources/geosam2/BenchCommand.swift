import ArgumentParser
import Dispatch
import Foundation
import SAM2

/// `geosam2 bench`: times the model itself (used by `scripts/bench`).
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time checkpoint loading, image encoding and prompt decoding.", shouldDisplay: false)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Encoder runs to time.") var encodeRuns = 3
    @Option(help: "Decoder runs to time.") var decodeRuns = 50
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        var clock = Stopwatch()
        let model = try modelOptions.loadModel()
        let load = clock.lap()
        let image = try RGBImage(width: 1024, height: 1024, pixels: syntheticScene(width: 1024, height: 1024))
        var encodes: [Double] = []
        var features: ImageFeatures?
        for _ in 0..<max(encodeRuns, 1) {
            _ = clock.lap()
            features = try model.encode(image, precision: modelOptions.encoderPrecision())
            encodes.append(clock.lap())
        }
        guard let features else { return }
        // Prompt → masks at the image size, the way an interactive session runs: the features are
        // prepared once per image (timed separately), then every prompt is decoded against them.
        // `unprepared` is the one-shot `predict(ImageFeatures, …)`, which redoes the layout work.
        _ = clock.lap()
        let prepared = try model.prepare(features)
        let prepare = clock.lap()
        let prompts = [
            Prompt(points: [PointPrompt(x: 500, y: 420, label: 1)]),
            Prompt(points: [PointPrompt(x: 300, y: 300, label: 1), PointPrompt(x: 340, y: 310, label: 0)]),
            Prompt(box: BoxPrompt(x0: 200, y0: 150, x1: 600, y1: 500)),
        ]
        _ = try model.predict(prepared, prompt: prompts[0], multimask: false)  // warm-up (lazy setup, page faults)
        var decodes: [Double] = [], logits: [Double] = [], unprepared: [Double] = []
        let runs = max(decodeRuns, 1)
        for i in 0..<runs {
            let prompt = prompts[i % prompts.count]
            _ = clock.lap()
            _ = try model.predict(prepared, prompt: prompt, multimask: false)
            decodes.append(clock.lap())
            _ = try model.decodeLogits(prepared, prompt: prompt, multimask: false)
            logits.append(clock.lap())
            if i < max(runs / 3, 1) {
                _ = try model.predict(features, prompt: prompt, multimask: false)
                unprepared.append(clock.lap())
            }
        }
        let result: [String: Double] = [
            "load_s": load, "encode_median_s": percentile(encodes, 50), "prepare_ms": prepare * 1000,
            "decode_p50_ms": percentile(decodes, 50) * 1000, "decode_p95_ms": percentile(decodes, 95) * 1000,
            "logits_p50_ms": percentile(logits, 50) * 1000,
            "unprepared_decode_p50_ms": percentile(unprepared, 50) * 1000,
        ]
        if json {
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for (k, v) in result.sorted(by: { $0.key < $1.key }) { print("\(k)\t\(String(format: "%.4f", v))") }
        }
    }
}

/// Wall-clock laps.
struct Stopwatch {
    private var last = DispatchTime.now().uptimeNanoseconds
    mutating func lap() -> Double {
        let now = DispatchTime.now().uptimeNanoseconds
        defer { last = now }
        return Double(now - last) / 1e9
    }
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    let rank = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count - 1)).rounded())))
    return sorted[rank]
}

/// A deterministic RGB scene with smooth regions and edges, for timing.
func syntheticScene(width: Int, height: Int) -> [UInt8] {
    var pixels = [UInt8](repeating: 0, count: width * height * 3)
    for y in 0..<height {
        for x in 0..<width {
            let field = ((x / 128) + (y / 96)) % 3
            let disc = (x - 500) * (x - 500) + (y - 420) * (y - 420) < 90 * 90
            let base: (Int, Int, Int) = disc ? (200, 60, 50) : [(90, 140, 60), (160, 150, 90), (60, 90, 140)][field]
            let i = (y * width + x) * 3
            let n = (x &* 73 &+ y &* 151) % 17
            pixels[i] = UInt8(clamping: base.0 + n)
            pixels[i + 1] = UInt8(clamping: base.1 + n)
            pixels[i + 2] = UInt8(clamping: base.2 + n)
        }
    }
    return pixels
}
