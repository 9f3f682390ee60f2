import ArgumentParser
import Foundation
import GeoIO
import GeoSegment
import Kernels
import SAM2

/// `geosam2 encode`: a raster into a feature store.
struct Encode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encode a raster into a georeferenced, resumable store of SAM2 features (one file per 1024×1024 tile).")

    @Argument(help: "Any raster GDAL reads (GeoTIFF/COG, JPEG2000, VRT, PNG, /vsizip/…, /vsicurl/…), or a web map: an XYZ URL template with {z}/{x}/{y}, a <GDAL_WMS> description, WMS:URL or WMTS:URL (with --bbox). Several rasters, or a directory of them: one store each (in --out DIR, or beside each raster), or one store of their mosaic with --mosaic.")
    var rasters: [String]

    @Flag(name: .long, help: "With several rasters: encode their mosaic (a VRT, OUT.mosaic.vrt) into one store at --out.")
    var mosaic = false

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: ArgumentHelp("Feature store directory (default: RASTER_STEM.geosam2 beside the raster).", valueName: "dir"))
    var out: String?

    @Option(name: .long, help: ArgumentHelp("Bands used as R,G,B, 1-based (default: by colour interpretation, else the first three).", valueName: "b1,b2,b3"))
    var bands: String?

    @Option(name: .long, help: ArgumentHelp("percentile (2–98 %, default), percentile:LOW,HIGH, minmax or none (8-bit as is).", valueName: "mode"))
    var stretch: String = "percentile"

    @Option(name: .long, help: ArgumentHelp("One value range for every band instead of a computed stretch.", valueName: "min,max"))
    var range: String?

    @Option(name: .long, help: "Resolution factor: 0.5 encodes at half resolution (for objects larger than a tile).")
    var scale: Double = 1

    @Option(name: .long, help: "Overlap of neighbouring full-resolution tiles in pixels (default: 128 for a new store, so that objects up to about 100 px nearly always fit one tile; a resumed store keeps its own).")
    var overlap: Int?

    @Option(name: .long, help: ArgumentHelp("Pyramid levels above the full-resolution grid, at 1/2, 1/4, … resolution, so that one click or box answers objects larger than a tile (default: 3 for a new store; a resumed store keeps its own, and more levels add to it; 0: none). A level is made only while the one below needs more than one tile.", valueName: "K"))
    var levels: Int?

    @Option(name: .long, help: "Feature storage: q16z (16-bit per-channel scaled codes, high bytes zstd-compressed; default for a new store), q16 (the same codes, plain safetensors), f16 or f32. A resumed store keeps its own.")
    var dtype: String?

    @Option(name: .long, help: ArgumentHelp("Encode only share K of N (0-based), for batch systems; shards write into the same store.", valueName: "K/N"))
    var shard: String?

    @Option(name: .long, help: ArgumentHelp("For a web map: the area to encode (in --crs; default EPSG:3857 for an XYZ template).", valueName: "minx,miny,maxx,maxy"))
    var bbox: String?

    @Option(name: .long, help: "For an XYZ template: the zoom level to fetch.")
    var zoom: Int?

    @Option(name: .long, help: "For a web map: the resolution to fetch, in the service's CRS units per pixel.")
    var resolution: Double?

    @Option(name: .long, help: ArgumentHelp("CRS to assume when the raster has a geotransform but no CRS; for a web map, the CRS of --bbox.", valueName: "crs"))
    var crs: String?

    @Option(name: .long, help: "Cores to use (default: the ones this process may use — its CPU affinity and cgroup quota, so a Slurm allocation or a Kubernetes CPU limit — or GEOSAM2_THREADS).")
    var threads: Int?

    @Option(name: .long, help: ArgumentHelp("Tiles encoded at once, each on a share of the cores (default: one per core, at most 16 and no more than half the available memory holds).", valueName: "K"))
    var tilesInFlight: Int?

    @Flag(name: .long, help: "Replace a store made with other parameters.")
    var force = false

    @Flag(name: .long, help: "Print nothing but errors.")
    var quiet = false

    @Option(name: .long, help: ArgumentHelp(
        "auto (a bar on a terminal, lines otherwise, on stderr) or json: one JSON object per line on stdout per tile (event, done, total, encoded, skipped, empty, tile, elapsed_s, eta_s), then one with event \"done\".",
        valueName: "auto|json"))
    var progress: String = "auto"

    func run() throws {
        MemoryPolicy.retainFreedMemory()  // tile after tile: reuse the heap, no fresh page faults
        if let threads, threads < 1 { throw CLIError("--threads must be at least 1, got \(threads)") }
        if let tilesInFlight, tilesInFlight < 1 { throw CLIError("--tiles-in-flight must be at least 1, got \(tilesInFlight)") }
        var options = EncodeOptions()
        if let bands { options.bands = try numbers(bands, count: nil, what: "--bands").map { Int($0) } }
        options.stretch = try StretchMode(parsing: stretch)
        if let range {
            let v = try numbers(range, count: 2, what: "--range min,max")
            options.stretch = .range(min: v[0], max: v[1])
        }
        options.scale = scale
        options.overlap = overlap
        options.levels = levels
        options.featureDType = dtype
        options.force = force
        options.crs = crs
        options.shard = try shard.map(shardOption)
        // auto: a resumed store keeps its own precision, a new one gets the CPU's default (bf16, int16 or fp32).
        if modelOptions.precision.lowercased() != "auto" { options.precision = try modelOptions.encoderPrecision() }
        guard !rasters.isEmpty else { throw CLIError("give a raster to encode") }
        var inputs: [String] = []
        var isDirectory: ObjCBool = false
        for r in rasters {
            if FileManager.default.fileExists(atPath: r, isDirectory: &isDirectory), isDirectory.boolValue {
                let found = try RasterEncoder.rasters(inDirectory: r)
                guard !found.isEmpty else { throw CLIError("\(r) holds no raster file") }
                inputs += found
            } else {
                inputs.append(r)
            }
        }
        var raster = inputs[0]
        if mosaic {
            guard let out else { throw CLIError("--mosaic needs --out STORE") }
            let vrt = URL(fileURLWithPath: out).standardizedFileURL.path + ".mosaic.vrt"
            do { _ = try RasterDataset.buildVRT(at: vrt, sources: inputs) } catch { throw CLIError("\(error)") }
            raster = vrt
        } else if inputs.count > 1 || rasters.contains(where: { FileManager.default.fileExists(atPath: $0, isDirectory: &isDirectory) && isDirectory.boolValue }) {
            return try runBatch(inputs, options: options)
        }
        var storeURL = out.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? RasterEncoder.defaultStoreURL(for: raster)
        if WebMapRequest.isWebMap(raster) {
            // A web map: its area fetched once into STORE.source.tif, which then encodes as a file.
            guard let out else { throw CLIError("a web map needs --out STORE") }
            guard let bbox else { throw CLIError("a web map needs --bbox minx,miny,maxx,maxy (and --zoom for an XYZ template)") }
            let request = WebMapRequest(source: raster, box: try boxOption(bbox), crs: crs, zoom: zoom, resolution: resolution)
            storeURL = URL(fileURLWithPath: out, isDirectory: true)
            let local = storeURL.standardizedFileURL.path + ".source.tif"
            let fetched = try request.materialize(to: local)
            if !quiet, progress != "json" { FileHandle.standardError.write(Data("encode: \(fetched ? "fetched the map into" : "reusing") \(local)\n".utf8)) }
            raster = local
            options.crs = nil
        } else if bbox != nil || zoom != nil || resolution != nil {
            throw CLIError("--bbox, --zoom and --resolution are for web maps (an XYZ template with {z}/{x}/{y}, <GDAL_WMS>, WMS: or WMTS:)")
        }

        guard ["auto", "json"].contains(progress) else { throw CLIError("--progress must be auto or json, got \(progress)") }
        let encoderModel = try modelOptions.loadEncoderModel()
        let split = try concurrency(for: encoderModel)
        options.concurrency = split
        let json = progress == "json"
        let reporter = ProgressReporter(quiet: quiet || json, label: "encode")
        var announced = false
        let precision = try RasterEncoder.precision(for: storeURL, options: options)
        let summary = try RasterEncoder.run(raster: raster, store: storeURL, model: encoderModel, options: options) { p in
            announce(split, precision, once: &announced)
            if json {
                JSONLines.emit(p)
            } else {
                reporter.update(done: p.finished, total: p.total, detail: "encoded \(p.encoded), skipped \(p.skipped), empty \(p.empty)",
                                rateCount: p.encoded, elapsed: p.elapsed)
            }
        }
        reporter.finish()
        if json {
            JSONLines.emit(["event": "done", "store": summary.storeURL.path, "encoded": summary.encoded, "skipped": summary.skipped,
                               "empty": summary.empty, "complete": summary.complete])
        } else if !quiet {
            let state = summary.complete ? "complete" : "incomplete (other shards pending)"
            print("\(summary.storeURL.path): encoded \(summary.encoded), skipped \(summary.skipped) already done, \(summary.empty) empty; store \(state)")
        }
    }
}

extension Encode {
    /// `--threads` and `--tiles-in-flight` as a split of the cores, for the model's width.
    func concurrency(for model: EncoderModel) throws -> EncodeConcurrency {
        let cores = threads ?? CPUAllowance.current.cores
        let split = try EncodeConcurrency.automatic(cores: cores, tilesInFlight: tilesInFlight, embedDim: model.model.configuration.embedDim)
        // Tiles are read one window at a time and each block once: a small block cache is enough,
        // and GDAL's default (5 % of the memory) would grow with the raster.
        if ProcessInfo.processInfo.environment["GDAL_CACHEMAX"] == nil { GDAL.setConfigOption("GDAL_CACHEMAX", "64") }
        return split
    }

    /// The split, said once when the tiles start (after the store is planned, so that a bad input
    /// stays a one-line error).
    func announce(_ split: EncodeConcurrency, _ precision: EncoderPrecision, once said: inout Bool) {
        guard !said, !quiet, progress != "json" else { return }
        said = true
        let cores = threads ?? CPUAllowance.current.cores
        let source = threads != nil ? "--threads" : CPUAllowance.current.limitedBy
        FileHandle.standardError.write(Data("encode: \(cores) core\(cores == 1 ? "" : "s") (\(source)), \(split), \(precision.rawValue)\n".utf8))
    }

    /// Several rasters, one store each (in `--out DIR` or beside each raster), with one progress.
    func runBatch(_ inputs: [String], options: EncodeOptions) throws {
        guard !inputs.contains(where: WebMapRequest.isWebMap), bbox == nil, zoom == nil, resolution == nil else {
            throw CLIError("web maps are encoded one at a time")
        }
        guard Set(inputs.map { URL(fileURLWithPath: $0).deletingPathExtension().lastPathComponent }).count == inputs.count || out == nil else {
            throw CLIError("two rasters have the same name: their stores in --out would clash")
        }
        let jobs = inputs.map { raster -> (raster: String, store: URL) in
            let name = URL(fileURLWithPath: raster).deletingPathExtension().lastPathComponent + ".geosam2"
            return (raster, out.map { URL(fileURLWithPath: $0, isDirectory: true).appendingPathComponent(name, isDirectory: true) }
                ?? RasterEncoder.defaultStoreURL(for: raster))
        }
        if let out {
            do { try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true) } catch {
                throw CLIError("cannot create \(out): \(error.localizedDescription)")
            }
        }
        guard ["auto", "json"].contains(progress) else { throw CLIError("--progress must be auto or json, got \(progress)") }
        let encoderModel = try modelOptions.loadEncoderModel()
        var options = options
        let split = try concurrency(for: encoderModel)
        options.concurrency = split
        let json = progress == "json"
        let reporter = ProgressReporter(quiet: quiet || json, label: "encode")
        var announced = false
        let precision = try options.precision ?? RasterEncoder.precision(for: jobs[0].store, options: options)
        let summaries = try RasterEncoder.run(batch: jobs, model: encoderModel, options: options) { p, i in
            announce(split, precision, once: &announced)
            if json {
                JSONLines.emit(p)
            } else {
                reporter.update(done: p.finished, total: p.total,
                                detail: "raster \(i + 1)/\(jobs.count), encoded \(p.encoded), skipped \(p.skipped), empty \(p.empty)",
                                rateCount: p.encoded, elapsed: p.elapsed)
            }
        }
        reporter.finish()
        for summary in summaries {
            if json {
                JSONLines.emit(["event": "done", "store": summary.storeURL.path, "encoded": summary.encoded, "skipped": summary.skipped,
                                "empty": summary.empty, "complete": summary.complete])
            } else if !quiet {
                print("\(summary.storeURL.path): encoded \(summary.encoded), skipped \(summary.skipped), \(summary.empty) empty; store \(summary.complete ? "complete" : "incomplete")")
            }
        }
    }
}

/// `geosam2 verify`: checks a feature store, and repairs it on request.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that every tile of a feature store is present, uncorrupted (CRC-32C over every byte), readable and matches its manifest.",
        discussion: """
            Exits non-zero when a tile is missing or bad. With --repair, bad tiles are moved aside             (tiles/ID.safetensors.corrupt) and encoded again from the store's raster with the parameters             the manifest records; the model is the store's checkpoint (or --model).
            """)

    @Argument(help: "A feature store directory.") var store: String
    @Flag(name: .long, help: "Only check checksums and headers, not every value.") var quick = false
    @Flag(name: .long, help: "Re-encode the bad tiles (needs the raster and the model).") var repair = false
    @Option(name: .long, help: "Checkpoint for --repair (default: the one the store records, else its preset from the model cache).") var model: String?
    @Option(name: .long, help: "Architecture JSON for a custom checkpoint.") var config: String?
    @Flag(name: .long, help: "Print only problems.") var quiet = false

    func run() throws {
        let featureStore = try FeatureStore.open(URL(fileURLWithPath: store, isDirectory: true))
        var report = try featureStore.verify(readValues: !quick)
        describe(report)
        if repair, !report.problems.isEmpty {
            let bad = report.problems.map(\.tile)
            let encoderModel = try storeModel(featureStore.manifest, model: model, config: config)
            let reporter = ProgressReporter(quiet: quiet, label: "repair")
            let summary = try RasterEncoder.repair(bad, in: featureStore, model: encoderModel) { p in
                reporter.update(done: p.finished, total: p.total, detail: "re-encoded \(p.encoded), empty \(p.empty)", rateCount: p.encoded, elapsed: p.elapsed)
            }
            reporter.finish()
            if !quiet { print("repaired \(summary.encoded + summary.empty) tile\(bad.count == 1 ? "" : "s"): \(bad.joined(separator: ", ")) (the bad files are kept as .corrupt)") }
            report = try featureStore.verify(readValues: !quick)
            describe(report)
        }
        guard report.isComplete else { throw ExitCode(1) }
    }

    func describe(_ report: VerificationReport) {
        if !quiet || !report.isComplete {
            print("\(store): \(report.done.count) done, \(report.empty.count) empty, \(report.pending.count) missing, \(report.problems.count) bad")
        }
        for p in report.problems { print("bad tile \(p)") }
        if !report.pending.isEmpty { print("missing: \(report.pending.prefix(20).joined(separator: ", "))\(report.pending.count > 20 ? ", …" : "")") }
        if !report.unchecked.isEmpty, !quiet {
            print("note: \(report.unchecked.count) tile\(report.unchecked.count == 1 ? "" : "s") carry no checksum (written before 0.2): checked for structure\(quick ? "" : " and values") only; `geosam2 verify --repair` does not rewrite sound tiles, re-encode into a new store to add checksums")
        }
        if !report.problems.isEmpty, !repair { print("repair with: geosam2 verify --repair \(store)") }
    }
}
