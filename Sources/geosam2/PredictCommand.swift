import ArgumentParser
import Foundation
import GeoIO
import GeoSegment
import Kernels
import SAM2
import TensorIO

/// `geosam2 predict`: SAM2 on a plain image, with the outputs of `SAM2ImagePredictor.predict`.
struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment an 8-bit RGB image from point and box prompts in pixel coordinates.",
        discussion: """
            Coordinates are pixels of IMAGE (x right, y down), as in SAM2ImagePredictor.predict.
            Writes low_res_logits.npy (float32 [C,256,256]), masks.npy (uint8 [C,H,W]) and
            scores.json ({"iou": [...]}) to --out; with --features also image_embed.npy,
            high_res_feat_s0.npy and high_res_feat_s1.npy. C is 3 with --multimask, else 1.

            With --automatic, runs SAM2AutomaticMaskGenerator.generate on the whole image instead
            (crop_n_layers 0; its parameters below) and writes masks.json: the official records
            (uncompressed RLE segmentation, area, bbox, predicted_iou, point_coords,
            stability_score, crop_box) in the official order. --features-from DIR decodes from
            image_embed.npy, high_res_feat_s0.npy and high_res_feat_s1.npy in DIR instead of
            encoding IMAGE (the image then only gives the size).
            """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: "Any 8-bit RGB image GDAL can read (PNG, JPEG, TIFF, ...).")
    var image: String

    @Option(name: .customLong("point"), help: ArgumentHelp("A point prompt; LABEL is 1 (foreground) or 0 (background). Repeatable.", valueName: "x,y,label"))
    var points: [String] = []

    @Option(name: .long, help: ArgumentHelp("A box prompt.", valueName: "x0,y0,x1,y1"))
    var box: String?

    @Option(name: .customLong("mask-input"), help: ArgumentHelp("Low-resolution logits [1,256,256] from an earlier prediction (.npy).", valueName: "npy"))
    var maskInput: String?

    @Flag(name: .long, help: "Return the three multimask candidates instead of one mask.")
    var multimask = false

    @Flag(name: .long, help: "Also write the image features.")
    var features = false

    @Flag(name: .long, help: "Segment everything: the official automatic mask generator on the whole image.")
    var automatic = false

    @Option(name: .customLong("features-from"), help: ArgumentHelp("Decode from these features (a --features output) instead of encoding.", valueName: "dir"))
    var featuresFrom: String?

    @OptionGroup(title: "Automatic mask generator (with --automatic)") var generator: AutomaticMaskArguments

    @Option(name: .long, help: "Output directory (created if missing).")
    var out: String

    func run() throws {
        if automatic { return try runAutomatic() }
        let prompt = try makePrompt()
        let model = try modelOptions.loadModel()
        let picture = try readImage()
        let imageFeatures = try features(of: picture, model: model)
        let prediction = try model.predict(imageFeatures, prompt: prompt, multimask: multimask)

        let dir = URL(fileURLWithPath: out, isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        } catch {
            throw CLIError("cannot create output directory \(out): \(error.localizedDescription)")
        }
        try NumPy.write(prediction.lowResolutionLogits, to: dir.appendingPathComponent("low_res_logits.npy"))
        try NumPy.writeUInt8(prediction.masks, shape: [prediction.count, prediction.height, prediction.width],
                             to: dir.appendingPathComponent("masks.npy"))
        let scores = try JSONSerialization.data(withJSONObject: ["iou": prediction.scores.map(Double.init)], options: [.sortedKeys])
        try scores.write(to: dir.appendingPathComponent("scores.json"))
        if features {
            try NumPy.write(imageFeatures.imageEmbedding, to: dir.appendingPathComponent("image_embed.npy"))
            try NumPy.write(imageFeatures.highResolutionS0, to: dir.appendingPathComponent("high_res_feat_s0.npy"))
            try NumPy.write(imageFeatures.highResolutionS1, to: dir.appendingPathComponent("high_res_feat_s1.npy"))
        }
    }

    /// `--automatic`: the generator's records as the official code returns them.
    func runAutomatic() throws {
        guard points.isEmpty, box == nil, maskInput == nil else { throw CLIError("--automatic takes no prompts") }
        let options = try generator.options
        let model = try modelOptions.loadModel()
        let picture = try readImage()
        let imageFeatures = try features(of: picture, model: model)
        let masks = try AutomaticMaskGenerator(model: model, options: options).generate(try model.prepare(imageFeatures))
        let records: [[String: Any]] = masks.map { m in
            [
                "segmentation": ["size": [m.height, m.width], "counts": m.columnMajorRLE],
                "area": m.area,
                // Parity: XYWH from the inclusive box, so w and h are one less than the extent.
                "bbox": [m.box.x0, m.box.y0, m.box.x1 - m.box.x0, m.box.y1 - m.box.y0],
                "predicted_iou": Double(m.predictedIoU),
                "point_coords": [[Double(m.point.x), Double(m.point.y)]],
                // 0/0 (no pixel above the low threshold) is NaN, as officially; JSON has no NaN: null.
                "stability_score": m.stabilityScore.isNaN ? NSNull() : Double(m.stabilityScore) as Any,
                "crop_box": [0, 0, m.width, m.height],
            ]
        }
        let dir = URL(fileURLWithPath: out, isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try JSONSerialization.data(withJSONObject: records, options: [.sortedKeys]).write(to: dir.appendingPathComponent("masks.json"))
        } catch {
            throw CLIError("cannot write \(out)/masks.json: \(error.localizedDescription)")
        }
    }

    /// The picture's features: encoded, or read from `--features-from` (a `--features` output or
    /// the official arrays), so several prompts can be decoded against one encoding.
    func features(of picture: RGBImage, model: SAM2Model) throws -> ImageFeatures {
        guard let featuresFrom else { return try modelOptions.encode(picture, with: model) }
        let dir = URL(fileURLWithPath: featuresFrom, isDirectory: true)
        func read(_ name: String) throws -> Tensor {
            var t = try NumPy.read(dir.appendingPathComponent(name))
            if t.shape.first == 1 { t.reshape(Array(t.shape.dropFirst())) }  // the official [1, C, H, W]
            return t
        }
        return try ImageFeatures(imageEmbedding: read("image_embed.npy"), highResolutionS0: read("high_res_feat_s0.npy"),
                                 highResolutionS1: read("high_res_feat_s1.npy"), originalWidth: picture.width,
                                 originalHeight: picture.height)
    }

    func makePrompt() throws -> Prompt {
        var prompt = Prompt()
        for text in points {
            let v = try numbers(text, count: 3, what: "--point x,y,label")
            guard v[2] == 0 || v[2] == 1 else { throw CLIError("--point \(text): label must be 1 (foreground) or 0 (background)") }
            prompt.points.append(PointPrompt(x: Float(v[0]), y: Float(v[1]), label: Int(v[2])))
        }
        if let box {
            let v = try numbers(box, count: 4, what: "--box x0,y0,x1,y1")
            guard v[0] <= v[2], v[1] <= v[3] else { throw CLIError("--box \(box): x0,y0 must be the top-left and x1,y1 the bottom-right corner") }
            prompt.box = BoxPrompt(x0: Float(v[0]), y0: Float(v[1]), x1: Float(v[2]), y1: Float(v[3]))
        }
        if let maskInput {
            prompt.maskInput = try NumPy.read(URL(fileURLWithPath: maskInput))
        }
        guard !prompt.isEmpty else { throw CLIError("no prompt: give --point, --box or --mask-input") }
        return prompt
    }

    func readImage() throws -> RGBImage {

        let dataset = try RasterDataset.open(image)
        let rgb = try dataset.readRGB8()
        return try RGBImage(width: rgb.width, height: rgb.height, pixels: rgb.pixels)
    }
}

/// Parses comma-separated finite numbers (exactly `count` of them when given).
func numbers(_ text: String, count: Int?, what: String) throws -> [Double] {
    let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    let values = parts.compactMap(Double.init)
    guard values.count == parts.count, count.map({ $0 == parts.count }) ?? true, values.allSatisfy(\.isFinite) else {
        throw CLIError("\(what): expected \(count.map(String.init) ?? "some") comma-separated numbers, got \"\(text)\"")
    }
    return values
}

/// `--shard K/N` as `(index: K, count: N)`.
func shardOption(_ text: String) throws -> (index: Int, count: Int) {
    let parts = text.split(separator: "/").compactMap { Int($0) }
    guard parts.count == 2 else { throw CLIError("--shard \(text): expected K/N, e.g. 0/4") }
    return (parts[0], parts[1])
}

/// `--bbox minx,miny,maxx,maxy` with min below max.
func boxOption(_ text: String) throws -> MapBox {
    let v = try numbers(text, count: 4, what: "--bbox minx,miny,maxx,maxy")
    guard v[0] < v[2], v[1] < v[3] else { throw CLIError("--bbox \(text): min must be below max") }
    return MapBox(minX: v[0], minY: v[1], maxX: v[2], maxY: v[3])
}

/// `geosam2 inspect`: which model a checkpoint holds.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show which SAM2 model a checkpoint holds.")

    @Argument(help: "A .pt or .safetensors checkpoint.") var checkpoint: String

    func run() throws {
        let info = try SAM2Model.inspect(contentsOf: URL(fileURLWithPath: checkpoint))
        let c = info.preset.configuration
        print("\(checkpoint): SAM \(c.version) \(info.preset.rawValue), embed \(c.embedDim), blocks \(c.blockCount), \(info.tensorCount) tensors")
    }
}
