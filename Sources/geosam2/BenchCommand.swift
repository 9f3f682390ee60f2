import ArgumentParser
import Dispatch
import Foundation
import GeoIO
import GeoSegment
import Kernels
import TensorIO
import SAM2

/// `geosam2 bench`: times the model itself (used by `scripts/bench`).
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time checkpoint loading, image encoding and prompt decoding.", shouldDisplay: false)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Encoder runs to time.") var encodeRuns = 3
    @Option(help: "Decoder runs to time.") var decodeRuns = 50
    @Option(help: "Also time prompt → polygons on this feature store (encoded with the same model).") var store: String?
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Time the automatic mask generator on one 1024² tile instead (and the batched decoder).") var automatic = false
    @Option(help: "With --automatic: the tile image (default: a synthetic scene).") var image: String?
    @Option(help: "With --automatic: generator runs to time.") var generateRuns = 3
    @OptionGroup(title: "With --automatic") var generator: AutomaticMaskArguments

    func run() throws {
        MemoryPolicy.retainFreedMemory()  // as encode does
        if let store {
            try benchSegment(store)
            return
        }
        if automatic {
            try benchAutomatic()
            return
        }
        var clock = Stopwatch()
        let model = try modelOptions.loadModel()
        let load = clock.lap()
        let image = try RGBImage(width: 1024, height: 1024, pixels: syntheticScene(width: 1024, height: 1024))
        var encodes: [Double] = []
        var features: ImageFeatures?
        for _ in 0..<max(encodeRuns, 1) {
            _ = clock.lap()
            features = try modelOptions.encode(image, with: model)
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

extension Bench {
    /// The automatic mask generator on one tile from its features (the encoder pass is not
    /// timed: `generate` reads stored features), and the batched decoder's points per second
    /// against decoding the same points one by one.
    func benchAutomatic() throws {
        var clock = Stopwatch()
        let model = try modelOptions.loadModel()
        let picture: RGBImage
        if let image {
            let rgb = try RasterDataset.open(image).readRGB8()
            picture = try RGBImage(width: rgb.width, height: rgb.height, pixels: rgb.pixels)
        } else {
            picture = try RGBImage(width: 1024, height: 1024, pixels: syntheticScene(width: 1024, height: 1024))
        }
        let prepared = try model.prepare(try modelOptions.encode(picture, with: model))
        let options = try generator.options
        let points = options.normalizedPoints.prefix(options.pointsPerBatch).map {
            Prompt(points: [PointPrompt(x: Float($0.x * Double(picture.width)), y: Float($0.y * Double(picture.height)), label: 1)])
        }
        _ = try model.decodeLogits(prepared, prompts: Array(points.prefix(4)), multimask: true)  // warm-up
        var batched: [Double] = [], single: [Double] = []
        for _ in 0..<3 {
            _ = clock.lap()
            _ = try model.decodeLogits(prepared, prompts: points, multimask: options.multimaskOutput)
            batched.append(Double(points.count) / clock.lap())
            for p in points { _ = try model.decodeLogits(prepared, prompt: p, multimask: options.multimaskOutput) }
            single.append(Double(points.count) / clock.lap())
        }
        let amg = try AutomaticMaskGenerator(model: model, options: options)
        var tiles: [Double] = []
        var masks = 0
        for _ in 0..<max(generateRuns, 1) {
            _ = clock.lap()
            masks = try amg.generate(prepared).count
            tiles.append(clock.lap())
        }
        let result: [String: Double] = [
            "batched_points_per_s": percentile(batched, 50), "single_points_per_s": percentile(single, 50),
            "generate_median_s": percentile(tiles, 50), "generate_min_s": tiles.min() ?? 0, "masks": Double(masks),
            "points": Double(options.normalizedPoints.count),
        ]
        if json {
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for (k, v) in result.sorted(by: { $0.key < $1.key }) { print("\(k)\t\(String(format: "%.4f", v))") }
        }
    }

    /// Prompt → polygons on a store: decode + postprocess + polygonize, one object per run on a
    /// loaded tile (loading and preparing a tile is timed separately), with
    /// 1–3 points or a box, at positions spread over the encoded tiles; and polygonize alone on a
    /// realistic mask of a few blobs (random weights give speckled masks with thousands of parts).
    func benchSegment(_ path: String) throws {
        let segmenter = try openSegmenter(store: path, model: modelOptions.model, config: modelOptions.config)
        let m = segmenter.store.manifest
        let done = m.tiles.filter { segmenter.store.state(of: $0) == .done }
        guard !done.isEmpty, let transform = GeoTransform(coefficients: m.encoding.geoTransform) else {
            throw CLIError("\(path) has no encoded tile")
        }
        var generator = SplitMix64(state: 42)
        var total: [Double] = [], decode: [Double] = [], polygonize: [Double] = [], parts: [Double] = [], load: [Double] = []
        for i in 0..<max(decodeRuns, 1) {
            // Ten prompts per tile, as a user clicks. Loading and preparing the tile (what the first
            // click on a tile, or the hover preview before it, pays) is timed on its own.
            let tile = done[(i / 10) % done.count]
            if i % 10 == 0 {
                var clock = Stopwatch()
                try segmenter.warm(tile)
                load.append(clock.lap() * 1000)
            }
            func mapPoint(_ label: Int) -> MapPoint {
                let c = Double(tile.window[0]) + generator.unit() * Double(tile.window[2] - 40) + 20
                let r = Double(tile.window[1]) + generator.unit() * Double(tile.window[3] - 40) + 20
                let p = transform.pixelToMap(x: c, y: r)
                return MapPoint(x: p.x, y: p.y, label: label)
            }
            var prompt = ObjectPrompt()
            switch i % 3 {
            case 0: prompt.points = [mapPoint(1)]
            case 1: prompt.points = [mapPoint(1), mapPoint(1), mapPoint(0)]
            default:
                let a = mapPoint(1), b = mapPoint(1)
                prompt.box = MapBox(minX: min(a.x, b.x), minY: min(a.y, b.y), maxX: max(a.x, b.x), maxY: max(a.y, b.y))
            }
            var clock = Stopwatch()
            let result = try segmenter.segment(prompt)
            total.append(clock.lap() * 1000)
            decode.append(result.decodeMilliseconds)
            polygonize.append(result.polygonizeMilliseconds)
            parts.append(Double(result.polygons.count))
        }
        // A realistic mask: three blobs, one with a hole, on a 1024² tile.
        var blobs = [UInt8](repeating: 0, count: 1024 * 1024)
        for y in 0..<1024 {
            for x in 0..<1024 {
                let a = (x - 300) * (x - 300) + (y - 400) * (y - 400), b = (x - 700) * (x - 700) / 2 + (y - 650) * (y - 650)
                if (a < 150 * 150 && a > 40 * 40) || b < 120 * 120 || (x > 800 && x < 950 && y > 100 && y < 260) { blobs[y * 1024 + x] = 1 }
            }
        }
        var blobTimes: [Double] = []
        for _ in 0..<20 {
            var clock = Stopwatch()
            _ = try MaskVectorizer.polygons(mask: blobs, width: 1024, height: 1024, geoTransform: transform, options: PolygonOptions())
            blobTimes.append(clock.lap() * 1000)
        }
        // The CRC-32C the loader checks on every tile load: on a fresh mapping (as the loader
        // meets it, first touch of the pages included) and again on the touched one.
        var checksumFresh: [Double] = [], checksumWarm: [Double] = []
        for i in 0..<max(20, done.count) {
            let archive = try SafetensorsFile(contentsOf: segmenter.store.featuresURL(done[i % done.count]))
            var clock = Stopwatch()
            let first = archive.withFileBytes { ContentChecksum.check($0, searchLimit: archive.headerEnd) }
            checksumFresh.append(clock.lap() * 1000)
            let second = archive.withFileBytes { ContentChecksum.check($0, searchLimit: archive.headerEnd) }
            checksumWarm.append(clock.lap() * 1000)
            guard first == .valid, second == .valid else { throw CLIError("tile \(done[i % done.count].id) fails its checksum") }
        }
        let result: [String: Double] = [
            "tile_checksum_fresh_p50_ms": percentile(checksumFresh, 50), "tile_checksum_warm_p50_ms": percentile(checksumWarm, 50),
            "segment_p50_ms": percentile(total, 50), "segment_p95_ms": percentile(total, 95),
            "decode_p50_ms": percentile(decode, 50), "decode_p95_ms": percentile(decode, 95),
            "polygonize_speckled_p50_ms": percentile(polygonize, 50), "polygonize_speckled_p95_ms": percentile(polygonize, 95),
            "speckled_polygons_median": percentile(parts, 50), "speckled_polygons_p95": percentile(parts, 95),
            "tile_load_p50_ms": percentile(load, 50), "tile_load_p95_ms": percentile(load, 95),
            "polygonize_blobs_p50_ms": percentile(blobTimes, 50), "polygonize_blobs_p95_ms": percentile(blobTimes, 95),
        ]
        if json {
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for (k, v) in result.sorted(by: { $0.key < $1.key }) { print("\(k)\t\(String(format: "%.2f", v))") }
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
