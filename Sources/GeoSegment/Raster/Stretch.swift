import Foundation

/// How raster values become SAM2's 8-bit input.
public enum StretchMode: Sendable, Equatable, Codable, CustomStringConvertible {
    /// Per-band percentiles of the valid pixels of the whole raster (default 2–98 %).
    case percentile(low: Double, high: Double)
    /// Per-band minimum and maximum of the valid pixels.
    case minMax
    /// Values used as they are (8-bit input), clamped to 0…255.
    case none
    /// One fixed range for every band.
    case range(min: Double, max: Double)

    public static let `default` = StretchMode.percentile(low: 2, high: 98)

    /// Parses `--stretch` (`percentile`, `percentile:1,99`, `minmax`, `none`).
    public init(parsing text: String) throws {
        let lower = text.lowercased()
        switch lower {
        case "percentile", "percentiles": self = .default
        case "minmax", "min-max": self = .minMax
        case "none": self = .none
        default:
            if lower.hasPrefix("percentile:") {
                let parts = lower.dropFirst("percentile:".count).split(separator: ",").compactMap { Double($0) }
                guard parts.count == 2, parts[0] >= 0, parts[1] <= 100, parts[0] < parts[1] else {
                    throw GeoSegmentError("--stretch percentile:LOW,HIGH needs 0 ≤ LOW < HIGH ≤ 100, got \(text)")
                }
                self = .percentile(low: parts[0], high: parts[1])
            } else {
                throw GeoSegmentError("unknown stretch \(text); use percentile, percentile:LOW,HIGH, minmax or none")
            }
        }
    }

    public var description: String {
        switch self {
        case let .percentile(low, high): return "percentile \(low)–\(high) %"
        case .minMax: return "min–max"
        case .none: return "none"
        case let .range(min, max): return "range \(min)…\(max)"
        }
    }
}

/// A linear stretch of each source band to 0…255, fixed once for the whole raster so that a pixel
/// gets the same value whatever tile it falls in.
public struct Stretch: Sendable, Equatable, Codable {
    public struct BandRange: Sendable, Equatable, Codable {
        public var band: Int
        public var low: Double
        public var high: Double
    }

    public let mode: StretchMode
    /// The range of each source band (empty for `.none`).
    public let ranges: [BandRange]

    public init(mode: StretchMode, ranges: [BandRange]) {
        self.mode = mode
        self.ranges = ranges
    }

    /// Maps a value of `band` to 8 bits.
    @inline(__always)
    public func apply(_ value: Float, range: BandRange?) -> UInt8 {
        guard let range else { return UInt8(max(0, min(255, value.rounded()))) }
        let scaled = (Double(value) - range.low) / (range.high - range.low) * 255
        return UInt8(max(0, min(255, scaled.rounded())))
    }

    public func range(of band: Int) -> BandRange? { ranges.first { $0.band == band } }

    /// Computes the stretch from the valid samples of each band (`samples[band]`).
    static func compute(mode: StretchMode, samples: [Int: [Float]]) throws -> Stretch {
        var ranges: [BandRange] = []
        for band in samples.keys.sorted() {
            let values = samples[band] ?? []
            var low: Double, high: Double
            switch mode {
            case .none:
                return Stretch(mode: mode, ranges: [])
            case let .range(min, max):
                guard min < max else { throw GeoSegmentError("--range MIN,MAX needs MIN < MAX, got \(min),\(max)") }
                (low, high) = (min, max)
            case .minMax:
                guard let lo = values.min(), let hi = values.max() else { throw noValidPixels }
                (low, high) = (Double(lo), Double(hi))
            case let .percentile(p, q):
                guard !values.isEmpty else { throw noValidPixels }
                let sorted = values.sorted()
                (low, high) = (percentile(sorted, p), percentile(sorted, q))
            }
            // A constant band maps to 0 instead of dividing by zero.
            if !(high > low) { high = low + 1 }
            ranges.append(BandRange(band: band, low: low, high: high))
        }
        return Stretch(mode: mode, ranges: ranges)
    }

    static var noValidPixels: GeoSegmentError { GeoSegmentError("raster has no valid pixels (everything is nodata, NaN or masked)") }

    /// Linear interpolation between order statistics (numpy's default "linear" method).
    static func percentile(_ sorted: [Float], _ p: Double) -> Double {
        let position = p / 100 * Double(sorted.count - 1)
        let lower = Int(position.rounded(.down))
        let upper = min(lower + 1, sorted.count - 1)
        let t = position - Double(lower)
        return Double(sorted[lower]) * (1 - t) + Double(sorted[upper]) * t
    }
}
