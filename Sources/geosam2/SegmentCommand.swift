import ArgumentParser
import Foundation
import GeoSegment
import SAM2

/// Options shared by the commands that turn masks into polygons.
struct PolygonOptionGroup: ParsableArguments {
    @Option(name: .customLong("min-area"), help: "Drop polygons smaller than this many pixels.")
    var minArea: Double = 0
    @Flag(name: .customLong("largest-only"), help: "Keep only the largest polygon of each object.")
    var largestOnly = false
    @Option(name: .long, help: "Simplify polygons with this tolerance in map units (topology-preserving).")
    var simplify: Double = 0
    @Flag(name: .customLong("fill-holes"), help: "Drop the holes of polygons.")
    var fillHoles = false
    @Flag(name: .long, help: "Square the outlines (buildings, parcels): right angles along the object's dominant direction, within 3 × the tolerance (--simplify, at least 1.5 pixels) of the mask; shapes that cannot be squared that closely are only simplified.")
    var regularize = false

    var options: PolygonOptions { PolygonOptions(minArea: minArea, largestOnly: largestOnly, simplify: simplify, fillHoles: fillHoles, regularize: regularize) }
}

/// Opens a store with the model it was encoded with.
func openSegmenter(store: String, model: String?, config: String?) throws -> Segmenter {
    let featureStore = try FeatureStore.open(URL(fileURLWithPath: store, isDirectory: true))
    let encoderModel = try storeModel(featureStore.manifest, model: model, config: config)
    return try Segmenter(store: featureStore, model: encoderModel.model, checkpointSHA256: encoderModel.checkpointSHA256)
}

/// The model for a store: `--model` when given, else the checkpoint file the manifest records
/// (while it exists unchanged), else the store's preset from the model cache.
func storeModel(_ manifest: StoreManifest, model: String?, config: String?) throws -> EncoderModel {
    let recorded = model == nil ? ModelCatalog.recordedCheckpoint(of: manifest) : .unrecorded
    if case .usable(let url) = recorded { return try recordedModel(at: url, for: manifest) }
    guard let name = model ?? manifest.model.preset else { throw missingModel(recorded) }
    let options = try ModelOptions.parse(["--model", name] + (config.map { ["--config", $0] } ?? []))
    do {
        return try options.loadEncoderModel()
    } catch where recorded.problem != nil {
        throw CLIError("\(recorded.problem ?? ""); and \(error)")
    }
}

/// The checkpoint a store records (its SHA-256 already checked), with the manifest's
/// architecture: a custom checkpoint needs no --config either.
func recordedModel(at url: URL, for manifest: StoreManifest) throws -> EncoderModel {
    let loaded = try SAM2Model.load(contentsOf: url, configuration: manifest.model.configuration)
    return EncoderModel(model: loaded, checkpointSHA256: manifest.model.checkpointSHA256, preset: manifest.model.preset,
                        checkpointPath: url.path)
}

/// The error for a store whose model cannot be found without --model.
func missingModel(_ recorded: ModelCatalog.RecordedCheckpoint) -> CLIError {
    CLIError("\(recorded.problem ?? "the store was encoded with a custom model"): pass the checkpoint with --model (and --config)")
}

/// `geosam2 segment`: batch prompts from a vector file to polygons.
struct Segment: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment objects from prompts in a vector file (points = clicks, polygons = boxes) into polygons.",
        discussion: """
            Point features are clicks with an integer `label` (1 foreground, the default; 0 background);
            polygon features are boxes (their envelope). Features sharing an `object` attribute form one
            object; a feature without one is an object by itself. Prompts may be in any CRS.
            The output format follows the extension: .gpkg (default), .shp, .geojson (RFC 7946), .fgb;
            existing files are appended to.
            """)

    @Argument(help: "A feature store made by `geosam2 encode`.") var store: String
    @Option(name: .long, help: "Prompts: any OGR vector (GeoJSON, GeoPackage, Shapefile, …).") var prompts: String
    @Option(name: .long, help: "Output vector file.") var out: String
    @Option(name: .long, help: "Layer of the prompts file (default: the first).") var layer: String?
    @Option(name: .customLong("out-layer"), help: "Layer of the output (default: objects).") var outLayer: String?
    @OptionGroup var polygonOptions: PolygonOptionGroup
    @Flag(name: .long, help: "Ask SAM2 for three candidates and keep the best-scoring one.") var multimask = false
    @Option(name: .customLong("class"), help: ArgumentHelp("A class label for every object (the `class` attribute; a prompt feature's own `class` attribute wins).", valueName: "label"))
    var className: String?
    @Option(name: .customLong("mask-out"), help: ArgumentHelp("Also write each object's mask as a GeoTIFF (FILE.tif, or FILE_<id>.tif for several objects).", valueName: "file.tif"))
    var maskOut: String?
    @Option(name: .long, help: "Checkpoint (default: the store's preset from the model cache).") var model: String?
    @Option(name: .long, help: "Architecture JSON for a custom checkpoint.") var config: String?
    @Flag(name: .long, help: "Print only errors.") var quiet = false

    func run() throws {
        try polygonOptions.options.validate()
        let segmenter = try openSegmenter(store: store, model: model, config: config)
        let objects = try PromptReader.read(prompts, layer: layer, target: segmenter.spatialReference)
        guard !objects.isEmpty else { throw CLIError("\(prompts) holds no prompts") }
        let manifest = segmenter.store.manifest
        var segmented: [(name: String, record: ObjectRecord)] = []
        var failures = 0
        for object in objects {
            do {
                let result = try segmenter.segment(object.prompt, options: polygonOptions.options, multimask: multimask)
                guard !result.polygons.isEmpty else {
                    failures += 1
                    if !quiet { print("object \(object.name): skipped: empty mask after filtering") }
                    continue
                }
                // Id 0 until saved: the output file gives the ids (they only grow, see appendNew).
                segmented.append((object.name, ObjectRecord(objectID: 0, result: result, source: manifest.source.path,
                                                            model: "\(manifest.model.preset ?? "custom") sha256:\(manifest.model.checkpointSHA256)",
                                                            className: object.className ?? className)))
            } catch {
                failures += 1
                FileHandle.standardError.write(Data("object \(object.name): skipped: \(error)\n".utf8))
            }
        }
        var records: [ObjectRecord] = []
        if !segmented.isEmpty {
            records = try VectorExporter.appendNew(segmented.map(\.record), to: out, layer: outLayer, srs: segmenter.spatialReference)
        }
        for ((name, _), record) in zip(segmented, records) {
            let result = record.result
            if let maskOut {
                let path = objects.count == 1 ? maskOut : maskOut.replacingOccurrences(of: ".tif", with: "_\(record.objectID).tif")
                try VectorExporter.writeMask(result, to: path, srs: segmenter.spatialReference)
            }
            if !quiet {
                print("object \(name): id \(record.objectID), \(result.polygons.count) polygon\(result.polygons.count == 1 ? "" : "s"), score \(String(format: "%.3f", result.score)), tile \(result.tile)\(result.level > 0 ? " (level \(result.level))" : "")\(result.clipped ? ", clipped" : ""), \(String(format: "%.1f", result.decodeMilliseconds + result.polygonizeMilliseconds)) ms")
            }
        }
        if !quiet { print("\(records.count) object\(records.count == 1 ? "" : "s") written to \(out), \(failures) skipped") }
        if records.isEmpty { throw ExitCode(1) }
    }
}
