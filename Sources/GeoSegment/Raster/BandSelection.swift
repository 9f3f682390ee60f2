import GeoIO

/// Which raster bands become SAM2's red, green and blue.
public struct BandSelection: Sendable, Equatable, Codable {
    /// The distinct source bands read, 1-based, in the order first used.
    public let sourceBands: [Int]
    /// For each of R, G, B, the 1-based source band.
    public let rgb: [Int]

    /// Resolves the user's `--bands` choice (or the default) against a raster.
    ///
    /// Default: the bands whose colour interpretation is red, green and blue; else the first three
    /// non-alpha bands. One band becomes `[b, b, b]` and two become `[b1, b2, b1]`. Alpha bands are
    /// never colour: they only mask.
    public static func resolve(_ requested: [Int]?, in dataset: RasterDataset) throws -> BandSelection {
        let count = dataset.bandCount
        var interpretations: [Int: ColorInterpretation] = [:]
        for i in 1...max(count, 1) where i <= count {
            interpretations[i] = try rethrowing { try dataset.band(i).colorInterpretation }
        }
        let chosen: [Int]
        if let requested {
            guard (1...3).contains(requested.count) else {
                throw GeoSegmentError("--bands takes one to three band numbers, got \(requested.count)")
            }
            for b in requested {
                guard (1...count).contains(b) else {
                    throw GeoSegmentError("band \(b) does not exist (raster has \(count) band\(count == 1 ? "" : "s"))")
                }
                if interpretations[b] == .alpha {
                    throw GeoSegmentError("band \(b) is an alpha band: it masks pixels and cannot be used as colour")
                }
            }
            chosen = requested
        } else {
            let colour = (1...max(count, 1)).filter { $0 <= count && interpretations[$0] != .alpha }
            guard !colour.isEmpty else { throw GeoSegmentError("raster has no colour bands (only alpha)") }
            let byInterpretation = [ColorInterpretation.red, .green, .blue].compactMap { ci in
                colour.first { interpretations[$0] == ci }
            }
            chosen = byInterpretation.count == 3 ? byInterpretation : Array(colour.prefix(3))
        }
        let rgb: [Int]
        switch chosen.count {
        case 1: rgb = [chosen[0], chosen[0], chosen[0]]
        case 2: rgb = [chosen[0], chosen[1], chosen[0]]
        default: rgb = chosen
        }
        var distinct: [Int] = []
        for b in rgb where !distinct.contains(b) { distinct.append(b) }
        return BandSelection(sourceBands: distinct, rgb: rgb)
    }
}
