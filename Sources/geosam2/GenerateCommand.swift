import ArgumentParser
import Foundation
import GeoSegment
import SAM2

/// `geosam2 generate`: segment everything on a store, merged across tiles.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment everything: SAM2's automatic masks on every tile of a store, merged across tiles into one vector file.",
        discussion: """
            Each tile (or each tile meeting --bbox) is one crop of the official automatic mask
            generator, from its stored features (no encoder pass). Masks cut by an interior tile edge
            are dropped where another tile or pyramid level holds the object whole, duplicates from
            overlapping tiles are removed by NMS on the map, and an object that no tile holds whole
            is merged from its pieces. Each polygon gets object_id, score, stability, level, tile(s),
            area_m2 and the provenance attributes of `segment`.

            Resumable: every tile's masks are kept in OUT.parts/, and a rerun skips the tiles done.
            With --shard K/N only that share of the tiles is segmented (run the shards anywhere, in
            any order, then once without --shard to merge). The output replaces OUT only once complete.
            """)

    @Argument(help: "A feature store made by `geosam2 encode`.") var store: String
    @Option(name: .long, help: "Output vector file (.gpkg default, .geojson, .fgb, .shp).") var out: String
    @Option(name: .long, help: ArgumentHelp("Only the tiles and objects meeting this box.", valueName: "minx,miny,maxx,maxy"))
    var bbox: String?
    @Option(name: .long, help: "CRS of --bbox (default: the store's).") var crs: String?
    @OptionGroup(title: "Automatic mask generator (official parameters)") var generator: AutomaticMaskArguments
    @Option(name: .customLong("crop-nms-thresh"), help: "Box IoU above which two whole objects of different tiles or levels are one (crop_nms_thresh).")
    var cropNMSThreshold = 0.7
    @Option(name: .long, help: ArgumentHelp("Pyramid levels to segment (default: all; 0 is the encoded grid).", valueName: "0,1,..."))
    var levels: String?
    @Option(name: .long, help: ArgumentHelp("Segment only share K of N of the tiles (0-based); merge with a run without --shard.", valueName: "K/N"))
    var shard: String?
    @Flag(name: .long, help: "Discard the tiles an earlier run segmented (OUT.parts/).") var fresh = false
    @OptionGroup var polygonOptions: PolygonOptionGroup
    @Option(name: .customLong("out-layer"), help: "Layer of the output (default: objects).") var outLayer: String?
    @Option(name: .long, help: "Checkpoint (default: the one the store records, or its preset from the model cache).") var model: String?
    @Option(name: .long, help: "Architecture JSON for a custom checkpoint.") var config: String?
    @Option(name: .long, help: ArgumentHelp("Progress output: bar (stderr, default) or json (one event per line on stdout).", valueName: "mode"))
    var progress = "bar"
    @Flag(name: .long, help: "Print only errors.") var quiet = false

    func run() throws {
        guard ["bar", "json"].contains(progress) else { throw CLIError("--progress must be bar or json") }
        var options = GenerateOptions()
        options.masks = try generator.options
        options.cropNMSThreshold = cropNMSThreshold
        if let levels {
            let values = levels.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else { throw CLIError("--levels \(levels): expected level numbers, e.g. 0,1") }
            options.levels = values.compactMap { $0 }
        }
        let box = try bbox.map(boxOption)
        let share = try shard.map(shardOption)
        let segmenter = try openSegmenter(store: store, model: model, config: config)
        let generatorRun = try RasterMaskGenerator(segmenter: segmenter, options: options)
        let reporter = ProgressReporter(quiet: quiet || progress == "json", label: "generate")
        let summary = try generatorRun.run(output: out, bbox: box, crs: crs, shard: share, fresh: fresh,
                                           polygonOptions: polygonOptions.options, layer: outLayer) { p in
            if progress == "json" {
                var event: [String: Any] = ["event": p.merging ? "merging" : "progress", "done": p.finished, "total": p.total,
                                            "segmented": p.segmented, "elapsed_s": (p.elapsed * 1000).rounded() / 1000]
                if let tile = p.lastTile { event["tile"] = tile }
                if let eta = p.remainingSeconds { event["eta_s"] = (eta * 10).rounded() / 10 }
                JSONLines.emit(event)
            } else if !p.merging {
                reporter.update(done: p.finished, total: p.total, detail: p.lastTile ?? "starting", rateCount: p.segmented, elapsed: p.elapsed)
            }
        }
        reporter.finish()
        if progress == "json" {
            var event: [String: Any] = ["event": "done", "tiles": summary.tiles, "segmented": summary.segmented, "resumed": summary.resumed]
            if let n = summary.objects { event["objects"] = n; event["out"] = out }
            JSONLines.emit(event)
        } else if !quiet {
            let tiles = "\(summary.tiles) tile\(summary.tiles == 1 ? "" : "s") (\(summary.segmented) segmented, \(summary.resumed) from an earlier run)"
            if let n = summary.objects {
                print("\(out): \(n) object\(n == 1 ? "" : "s") from \(tiles)")
            } else {
                print("shard \(shard ?? ""): \(tiles); run without --shard to merge")
            }
        }
    }
}
