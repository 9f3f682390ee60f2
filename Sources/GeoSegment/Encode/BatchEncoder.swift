import Dispatch
import Foundation
import GeoIO

extension RasterEncoder {
    /// Raster files in a directory (its direct entries GDAL is likely to read, sorted by name).
    public static func rasters(inDirectory path: String) throws -> [String] {
        let extensions: Set<String> = ["tif", "tiff", "jp2", "img", "vrt", "png", "jpg", "jpeg", "ecw", "sid", "nc", "hdf"]
        let names = try rethrowing("cannot list \(path)") { try FileManager.default.contentsOfDirectory(atPath: path) }
        return names.filter { extensions.contains(URL(fileURLWithPath: $0).pathExtension.lowercased()) && !$0.hasPrefix(".") }
            .sorted().map { URL(fileURLWithPath: path).appendingPathComponent($0).path }
    }

    /// Encodes several rasters, each into its own store, with one progress over all their tiles:
    /// every store is planned (or resumed) first, so that the total and the ETA cover the whole
    /// batch. `progress` gets the batch's counts and the index of the raster in work.
    public static func run(batch: [(raster: String, store: URL)], model: EncoderModel, options: EncodeOptions,
                           progress: (EncodeProgress, Int) -> Void = { _, _ in }) throws -> [EncodeSummary] {
        var totals: [Int] = []
        for job in batch {
            let (store, _) = try rethrowing("\(job.raster)") { try prepare(raster: job.raster, store: job.store, model: model, options: options) }
            totals.append(Shard.share(of: encodingOrder(of: store.manifest), options.shard).count)
        }
        let total = totals.reduce(0, +)
        let start = DispatchTime.now().uptimeNanoseconds
        var before = EncodeProgress(total: total, finished: 0, encoded: 0, skipped: 0, empty: 0, lastTile: nil, elapsed: 0)
        var summaries: [EncodeSummary] = []
        for (i, job) in batch.enumerated() {
            var last = before
            let summary = try rethrowing("\(job.raster)") {
                try run(raster: job.raster, store: job.store, model: model, options: options) { p in
                    last = EncodeProgress(total: total, finished: before.finished + p.finished, encoded: before.encoded + p.encoded,
                                          skipped: before.skipped + p.skipped, empty: before.empty + p.empty, lastTile: p.lastTile,
                                          elapsed: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                    progress(last, i)
                }
            }
            before = last
            summaries.append(summary)
        }
        return summaries
    }
}
