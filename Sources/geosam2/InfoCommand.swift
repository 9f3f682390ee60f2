import ArgumentParser
import Foundation
import GeoIO
import GeoSegment

/// `geosam2 info`: what a raster or a feature store holds.
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Summarise a raster (size, bands, CRS, nodata, bounds) or a feature store (tiles, model, CRS, size).")

    @Argument(help: "A raster or a feature store directory.") var path: String
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() throws {
        let url = URL(fileURLWithPath: path, isDirectory: true)
        let summary: [String: Any] = FeatureStore.exists(at: url) ? try storeSummary(url) : try rasterSummary()
        if json {
            let data = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for (key, value) in summary.sorted(by: { $0.key < $1.key }) { print("\(key): \(describe(value))") }
        }
    }

    func describe(_ value: Any) -> String {
        switch value {
        case let array as [Any]: return array.map(describe).joined(separator: ", ")
        case let dict as [String: Any]: return dict.sorted(by: { $0.key < $1.key }).map { "\($0.key)=\(describe($0.value))" }.joined(separator: " ")
        case is NSNull: return "none"
        default: return "\(value)"
        }
    }

    func rasterSummary() throws -> [String: Any] {
        let dataset = try RasterDataset.open(path)
        var bands: [[String: Any]] = []
        for i in 1...max(dataset.bandCount, 1) where i <= dataset.bandCount {
            let band = try dataset.band(i)
            bands.append([
                "band": i, "type": band.dataType.gdalName, "color": band.colorInterpretation.rawValue,
                "nodata": band.noDataValue.map { $0.isNaN ? "nan" as Any : $0 as Any } ?? NSNull(),
            ])
        }
        let srs = dataset.spatialReference
        var result: [String: Any] = [
            "kind": "raster", "path": path, "driver": dataset.driverName,
            "width": dataset.width, "height": dataset.height, "bands": bands,
            "crs": (srs?.name).map { $0 as Any } ?? NSNull(), "epsg": (srs?.epsgCode).map { $0 as Any } ?? NSNull(),
            "geotransform": (dataset.geoTransform?.coefficients).map { $0 as Any } ?? NSNull(),
        ]
        if let b = dataset.bounds { result["bounds"] = [b.minX, b.minY, b.maxX, b.maxY] }
        result["tiles"] = (try? TileGrid(rasterWidth: dataset.width, rasterHeight: dataset.height).count) ?? 0
        return result
    }

    func storeSummary(_ url: URL) throws -> [String: Any] {
        let store = try FeatureStore.open(url)
        let m = store.manifest
        var counts: [String: Int] = ["done": 0, "empty": 0, "pending": 0]
        for tile in m.tiles { counts[store.state(of: tile).rawValue, default: 0] += 1 }
        let minX = m.tiles.map { $0.bounds[0] }.min() ?? 0, minY = m.tiles.map { $0.bounds[1] }.min() ?? 0
        let maxX = m.tiles.map { $0.bounds[2] }.max() ?? 0, maxY = m.tiles.map { $0.bounds[3] }.max() ?? 0
        return [
            "kind": "feature store", "path": url.path, "source": m.source.path,
            "tiles": ["total": m.tiles.count, "done": counts["done"] ?? 0, "empty": counts["empty"] ?? 0, "missing": counts["pending"] ?? 0],
            "complete": m.complete, "model": ["preset": m.model.preset.map { $0 as Any } ?? NSNull(), "checkpoint_sha256": m.model.checkpointSHA256],
            "epsg": m.source.epsg.map { $0 as Any } ?? NSNull(), "bounds": [minX, minY, maxX, maxY],
            "raster": [m.source.width, m.source.height], "scale": m.encoding.scale, "bands": m.encoding.bands.rgb,
            "stretch": m.encoding.stretch.mode.description, "dtype": m.encoding.featureDType,
            "size_on_disk_bytes": store.sizeOnDisk,
            "levels": [["level": 0, "grid": [m.encoding.width, m.encoding.height], "overlap": m.encoding.overlap, "tiles": m.tiles.count]]
                + (m.levels ?? []).map { level -> [String: Any] in
                    var c: [String: Int] = [:]
                    for t in level.tiles { c[store.state(of: t).rawValue, default: 0] += 1 }
                    return ["level": level.level, "grid": [level.width, level.height], "overlap": level.overlap, "tiles": level.tiles.count,
                            "done": c["done"] ?? 0, "empty": c["empty"] ?? 0, "missing": c["pending"] ?? 0]
                },
        ]
    }
}
