import ArgumentParser
import Foundation
import GeoIO
import GeoSAM2Server
import GeoSegment
import SAM2

/// `geosam2 serve`: the web UI and JSON API over a feature store.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment in the browser: serve a web map of a feature store or of a raster (encoded while you work) and a JSON API.",
        discussion: """
            Left click adds a foreground point, right click a background point, Shift+drag a box; S saves
            the object to the output GeoPackage (at each save, in one transaction). The API is described
            in the README. The server listens on 127.0.0.1 unless --host says otherwise.

            A raster (or a store not fully encoded) opens at once: the coarsest pyramid level is encoded
            first, then the tiles nearest the view, and a prompt on a tile not encoded yet encodes that
            tile first. Everything lands in the store (RASTER_STEM.geosam2 beside the raster), so stopping
            loses at most the tile in progress; `serve` or `encode` again resumes.
            """)

    @Argument(help: "A feature store made by `geosam2 encode`, or a raster (its store is made and filled while serving).")
    var path: String

    @Option(name: .long, help: "TCP port (0: any free port).") var port: Int = 8080
    @Option(name: .long, help: "Interface to listen on. Anything but loopback exposes the raster and the API to the network.")
    var host: String = "127.0.0.1"
    @Option(name: .long, help: ArgumentHelp("Output GeoPackage for saved objects (default: STEM_objects.gpkg beside the store).", valueName: "file.gpkg"))
    var out: String?
    @Option(name: .long, help: ArgumentHelp("Store directory when PATH is a raster (default: RASTER_STEM.geosam2 beside it).", valueName: "dir"))
    var store: String?
    @Option(name: .long, help: "Checkpoint file, or a preset name (tiny, small, base_plus, large) from the model cache — downloaded from Meta when missing. Default: the store's model, else tiny.")
    var model: String?
    @Option(name: .long, help: "Architecture JSON for a custom checkpoint.") var config: String?
    @Flag(name: .customLong("no-encode"), help: "Do not encode pending tiles while serving: prompts on them are refused.")
    var noEncode = false
    @Flag(name: .long, help: "Log every request.") var verbose = false
    @Flag(name: .long, help: "Print only the URL and errors.") var quiet = false
    @Flag(name: .customLong("machine-readable"), help: ArgumentHelp(
        "First stdout line: one JSON object with the address (url, port), the store, the output GeoPackage and the engine version; nothing else on stdout (for the QGIS plugin and scripts)."))
    var machineReadable = false

    func run() async throws {
        guard (0...65535).contains(port) else { throw CLIError("--port must be between 0 and 65535, got \(port)") }
        if let out, URL(fileURLWithPath: out).pathExtension.lowercased() != "gpkg" {
            throw CLIError("--out \(out): saved objects go to a GeoPackage (.gpkg); export other formats from the UI or with ogr2ogr")
        }
        // The map and the encoder read the raster through GDAL's block cache, whose default (5 % of
        // the memory) would dominate the server's footprint on a large raster.
        if ProcessInfo.processInfo.environment["GDAL_CACHEMAX"] == nil { GDAL.setConfigOption("GDAL_CACHEMAX", "256") }
        let given = URL(fileURLWithPath: path, isDirectory: true)
        var encoderModel: EncoderModel?
        let featureStore: FeatureStore
        var source: RasterSource?
        if FeatureStore.exists(at: given) {
            guard store == nil else { throw CLIError("--store is for a raster; \(path) already is a feature store") }
            featureStore = try FeatureStore.open(given)
        } else {
            var isDirectory: ObjCBool = false
            guard path.hasPrefix("/vsi") || FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw CLIError("\(path): no such feature store or raster")
            }
            guard !isDirectory.boolValue else { throw CLIError("\(path) is a directory but not a feature store (no manifest.json)") }
            let storeURL = store.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? RasterEncoder.defaultStoreURL(for: path)
            let existingPreset = (try? FeatureStore.open(storeURL))?.manifest.model.preset
            let loaded = try await loadModel(model ?? existingPreset ?? SAM2Preset.tiny.rawValue)
            encoderModel = loaded
            (featureStore, source) = try RasterEncoder.prepare(raster: path, store: storeURL, model: loaded, options: EncodeOptions())
        }
        let storeURL = featureStore.url
        let segmenterModel: EncoderModel
        if let encoderModel {
            segmenterModel = encoderModel
        } else {
            // Checked once: it hashes the whole checkpoint.
            let recorded = model == nil ? ModelCatalog.recordedCheckpoint(of: featureStore.manifest) : .unrecorded
            if case .usable(let url) = recorded {
                segmenterModel = try recordedModel(at: url, for: featureStore.manifest)
            } else {
                guard let name = model ?? featureStore.manifest.model.preset else { throw missingModel(recorded) }
                segmenterModel = try await loadModel(name)
            }
        }
        let pending = featureStore.manifest.allTiles.filter { featureStore.state(of: $0) == .pending }.count
        var onDemand: OnDemandEncoder?
        if pending > 0, !noEncode {
            do {
                let raster = try source ?? RasterEncoder.openSource(of: featureStore)
                onDemand = try OnDemandEncoder(store: featureStore, source: raster, model: segmenterModel) { line in
                    FileHandle.standardError.write(Data("\(line)\n".utf8))
                }
                if !quiet {
                    note("\(pending) of \(featureStore.manifest.allTiles.count) tiles are not encoded yet: encoding them while serving (coarsest level first, then the tiles in view; a prompt's tile at once)")
                }
            } catch {
                note("warning: \(pending) tiles are not encoded and cannot be encoded here (\(error)); prompts on them are refused")
            }
        } else if pending > 0, !quiet {
            note("\(pending) tiles are not encoded (--no-encode): prompts on them are refused; finish them with `geosam2 encode`")
        }
        let segmenter = try Segmenter(store: featureStore, model: segmenterModel.model, checkpointSHA256: segmenterModel.checkpointSHA256,
                                      onDemand: onDemand)

        var configuration = ServerConfiguration(outputPath: out ?? ServerConfiguration.defaultOutputPath(forStore: storeURL))
        configuration.host = host
        configuration.port = port
        if !configuration.isLoopback {
            note("warning: listening on \(host), not loopback: anyone who can reach this machine can see the raster and save or delete objects")
        }
        if !FileManager.default.fileExists(atPath: configuration.leafletDirectory + "/leaflet.js") {
            note("warning: Leaflet is missing (\(configuration.leafletDirectory)); install the Debian package libjs-leaflet (scripts/setup) for the map")
        }
        let quiet = quiet, machineReadable = machineReadable, storePath = storeURL.standardizedFileURL.path
        let outputPath = URL(fileURLWithPath: configuration.outputPath).standardizedFileURL.path
        configuration.logRequests = verbose
        let app = try buildApplication(segmenter: segmenter, configuration: configuration) { url in
            if machineReadable {
                JSONLines.emit(["event": "listening", "url": url, "port": URL(string: url)?.port ?? 0, "store": storePath,
                                "output": outputPath, "geosam2": GeoSAM2Version.current])
                return
            }
            let text = quiet ? "\(url)\n" : "GeoSAM2 is serving \(storePath)\n  open \(url)\n  saved objects go to \(outputPath)\n  stop with Ctrl+C\n"
            FileHandle.standardOutput.write(Data(text.utf8))
        }
        try await app.runService()
        onDemand?.stop()
    }

    /// A checkpoint by path or preset name; a preset missing from the cache is downloaded.
    func loadModel(_ name: String) async throws -> EncoderModel {
        var arguments = ["--model", name] + (config.map { ["--config", $0] } ?? [])
        if !FileManager.default.fileExists(atPath: name), let preset = ModelCatalog.preset(named: name) {
            let cached = ModelCatalog.cacheDirectory.appendingPathComponent(preset.checkpointFileName)
            if !FileManager.default.fileExists(atPath: cached.path) {
                let source = (try? ModelCatalog.downloadURL(for: preset).absoluteString) ?? preset.downloadURL
                note("\(preset.checkpointFileName) is not in the model cache; downloading it from \(source)")
                let bar = DownloadProgress(label: preset.checkpointFileName, quiet: quiet)
                _ = try await ModelCatalog.download(preset, progress: { received, total in bar.update(received: received, total: total) })
                bar.finish()
            }
            arguments = ["--model", cached.path] + (config.map { ["--config", $0] } ?? [])
        }
        return try ModelOptions.parse(arguments).loadEncoderModel()
    }

    func note(_ text: String) {
        FileHandle.standardError.write(Data("\(text)\n".utf8))
    }
}

/// `geosam2 sample`: a synthetic scene to try the tool on.
struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a synthetic aerial scene (fields, roads, buildings, water) as a georeferenced GeoTIFF to try the tool on.",
        discussion: """
            Deterministic: the same size and seed always give the same pixels. 1 m pixels in WGS 84 / UTM zone 33N (EPSG:32633). \
            Objects of three sizes: a lake about 300 px across, a forest about 1500 px across (smaller on small scenes) and, \
            from 3400×3400 px, a field complex 3000 px wide; --landmarks prints where they are (pixel boxes, JSON).
            """)

    @Argument(help: "Output GeoTIFF.") var out: String
    @Option(name: .long, help: "Width in pixels.") var width = 3000
    @Option(name: .long, help: "Height in pixels.") var height = 2000
    @Option(name: .long, help: "Seed of the scene's layout.") var seed: UInt64 = 1
    @Flag(name: .long, help: "Print the sized objects (name, pixel box, a pixel inside) as JSON lines.") var landmarks = false

    func run() throws {
        var options = SampleScene.Options()
        options.width = width
        options.height = height
        options.seed = seed
        try SampleScene.write(to: out, options: options)
        print("\(out): \(width)×\(height) RGB GeoTIFF, EPSG:\(options.epsg), \(options.pixelSize) m pixels")
        if landmarks {
            for l in SampleScene.landmarks(options) {
                let line = try JSONSerialization.data(withJSONObject: ["name": l.name, "box": l.box, "inside": l.inside], options: [.sortedKeys])
                print(String(decoding: line, as: UTF8.self))
            }
        }
    }
}
