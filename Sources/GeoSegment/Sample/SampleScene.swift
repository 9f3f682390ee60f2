import Foundation
import GeoIO
import Kernels

/// A synthetic, deterministic aerial scene to try the tool on without data of one's own: fields
/// with crop rows, a forest, a lake and a river, roads, and a village of buildings with shadows,
/// as an 8-bit RGB GeoTIFF in a real projected CRS (1 m pixels in UTM zone 33N by default).
///
/// Objects of three sizes (``landmarks(_:)``): a lake about 300 px across, a forest about 1500 px
/// across and, on scenes of at least 3400 × 3400 px, a field complex 3000 px wide — smaller than
/// a tile, larger than a tile, larger than two. On smaller scenes the lake and the forest shrink
/// to fit.
///
/// The same size and seed always give the same pixels.
public enum SampleScene {
    /// What to draw.
    public struct Options: Sendable, Equatable {
        public var width = 3000
        public var height = 2000
        /// Pixel size in metres.
        public var pixelSize = 1.0
        public var epsg = 32633
        /// Top-left corner in the CRS (default: farmland in Brandenburg, Germany).
        public var originX = 410_000.0
        public var originY = 5_810_000.0
        public var seed: UInt64 = 1

        public init() {}
    }

    /// Writes the scene as a tiled, compressed GeoTIFF with internal overviews.
    public static func write(to path: String, options: Options = Options()) throws {
        guard (64...20_000).contains(options.width), (64...20_000).contains(options.height) else {
            throw GeoSegmentError("sample size must be between 64 and 20000 pixels a side, got \(options.width)×\(options.height)")
        }
        guard options.pixelSize > 0, options.pixelSize.isFinite else { throw GeoSegmentError("pixel size must be positive") }
        let pixels = render(options)
        try rethrowing("cannot write \(path)") {
            let srs = try SpatialReference(epsg: options.epsg)
            try {
                let ds = try RasterDataset.create(
                    driver: "GTiff", path: path, width: options.width, height: options.height, bandCount: 3, dataType: .byte,
                    options: ["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2", "PHOTOMETRIC=RGB"])
                try ds.setGeoTransform(GeoTransform(originX: options.originX, pixelWidth: options.pixelSize,
                                                    originY: options.originY, pixelHeight: -options.pixelSize))
                try ds.setSpatialReference(srs)
                let plane = options.width * options.height
                for b in 0..<3 {
                    let band = try ds.band(b + 1)
                    try band.setColorInterpretation([.red, .green, .blue][b])
                    try band.write(values: Array(pixels[(b * plane)..<((b + 1) * plane)]))
                }
                try ds.flush()
            }()
            let factors = [2, 4, 8, 16].filter { max(options.width, options.height) / $0 >= 128 }
            if !factors.isEmpty {
                let ds = try RasterDataset.open(path, access: .update)
                try ds.buildOverviews(factors: factors, resampling: .average)
                try ds.flush()
            }
        }
    }

    /// An object of the scene with its nominal extent.
    public struct Landmark: Sendable, Equatable {
        /// "lake", "forest" or "field complex".
        public var name: String
        /// Nominal extent in pixels, `[minX, minY, maxX, maxY]` (pixel edges); the drawn outline
        /// wobbles around it by up to a quarter of its size for the lake and the forest.
        public var box: [Double]
        /// A pixel well inside the object (its centre), `[x, y]`.
        public var inside: [Double]
    }

    /// The lake, the forest and (on scenes large enough) the field complex.
    public static func landmarks(_ options: Options) -> [Landmark] {
        Layout(width: options.width, height: options.height).landmarks
    }

    /// The scene's pixels, band-sequential (R plane, G plane, B plane).
    public static func render(_ options: Options) -> [UInt8] {
        var canvas = Canvas(width: options.width, height: options.height, seed: options.seed)
        canvas.drawFields()
        canvas.drawFieldComplex()
        canvas.drawForest()
        canvas.drawWater()
        canvas.drawRoads()
        canvas.drawVillage()
        return canvas.planes()
    }
}

// MARK: - Drawing

/// Where the sized objects go.
private struct Layout {
    let width: Int
    let height: Int

    var small: Double { Double(min(width, height)) }
    /// The field complex needs room beside the forest and the lake.
    var hasComplex: Bool { width >= 3400 && height >= 3400 }

    var lake: (cx: Double, cy: Double, radius: Double) {
        hasComplex ? (700, 700, 150) : (Double(width) * 0.27, Double(height) * 0.68, min(150, small * 0.17))
    }
    var forest: (cx: Double, cy: Double, radius: Double) {
        hasComplex ? (Double(width) - 900, 900, 750) : (Double(width) * 0.82, Double(height) * 0.22, min(750, small * 0.22))
    }
    /// `[minX, minY, maxX, maxY]`.
    var complex: [Double]? {
        hasComplex ? [150, Double(height) - 1750, 3150, Double(height) - 150] : nil
    }

    var landmarks: [SampleScene.Landmark] {
        func disc(_ name: String, _ d: (cx: Double, cy: Double, radius: Double)) -> SampleScene.Landmark {
            SampleScene.Landmark(name: name, box: [d.cx - d.radius, d.cy - d.radius, d.cx + d.radius, d.cy + d.radius], inside: [d.cx, d.cy])
        }
        var result = [disc("lake", lake), disc("forest", forest)]
        if let c = complex {
            result.append(SampleScene.Landmark(name: "field complex", box: c, inside: [(c[0] + c[2]) / 2, (c[1] + c[3]) / 2]))
        }
        return result
    }
}

/// A hash of integer coordinates to [0, 1), for texture.
private func hash(_ x: Int, _ y: Int, _ salt: UInt64) -> Double {
    var h = UInt64(bitPattern: Int64(x)) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(bitPattern: Int64(y)) &* 0xC2B2_AE3D_27D4_EB4F ^ salt
    h = (h ^ (h >> 29)) &* 0xBF58_476D_1CE4_E5B9
    h ^= h >> 32
    return Double(h & 0xFFFFFF) / Double(0x1000000)
}

/// Smooth value noise in [0, 1) with features about `scale` pixels across.
private func valueNoise(_ x: Double, _ y: Double, scale: Double, salt: UInt64) -> Double {
    let fx = x / scale, fy = y / scale
    let x0 = Int(fx.rounded(.down)), y0 = Int(fy.rounded(.down))
    let tx = fx - Double(x0), ty = fy - Double(y0)
    let sx = tx * tx * (3 - 2 * tx), sy = ty * ty * (3 - 2 * ty)
    let a = hash(x0, y0, salt), b = hash(x0 + 1, y0, salt), c = hash(x0, y0 + 1, salt), d = hash(x0 + 1, y0 + 1, salt)
    return (a * (1 - sx) + b * sx) * (1 - sy) + (c * (1 - sx) + d * sx) * sy
}

private struct Canvas {
    let width: Int
    let height: Int
    var rgb: [Float]
    var random: SplitMix64
    /// Road centre lines, for placing buildings beside them.
    var roads: [[(Double, Double)]] = []
    /// Pixels already taken by water, so that buildings avoid it.
    var water: [Bool]

    init(width: Int, height: Int, seed: UInt64) {
        self.width = width
        self.height = height
        rgb = [Float](repeating: 0, count: width * height * 3)
        random = SplitMix64(state: seed &* 0x2545_F491_4F6C_DD1D &+ 7)
        water = [Bool](repeating: false, count: width * height)
    }

    mutating func set(_ x: Int, _ y: Int, _ c: (Double, Double, Double), alpha: Double = 1) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        let i = (y * width + x) * 3
        rgb[i] = Float(Double(rgb[i]) * (1 - alpha) + c.0 * alpha)
        rgb[i + 1] = Float(Double(rgb[i + 1]) * (1 - alpha) + c.1 * alpha)
        rgb[i + 2] = Float(Double(rgb[i + 2]) * (1 - alpha) + c.2 * alpha)
    }

    /// A patchwork of fields: a jittered grid of parcels (Voronoi cells), each with a crop colour
    /// and rows in its own direction.
    mutating func drawFields() {
        let cell = 380.0
        let columns = Int((Double(width) / cell).rounded(.up)) + 2, rows = Int((Double(height) / cell).rounded(.up)) + 2
        var seeds: [(x: Double, y: Double, colour: (Double, Double, Double), angle: Double, period: Double)] = []
        let crops: [(Double, Double, Double)] = [
            (112, 142, 62), (150, 160, 80), (196, 180, 96), (132, 104, 72), (88, 124, 58), (212, 196, 70), (164, 140, 104),
        ]
        for r in 0..<rows {
            for c in 0..<columns {
                let x = (Double(c) - 0.5 + random.range(0.15, 0.85)) * cell
                let y = (Double(r) - 0.5 + random.range(0.15, 0.85)) * cell
                let colour = crops[Int(random.next() % UInt64(crops.count))]
                seeds.append((x, y, colour, random.range(0, .pi), random.range(5, 11)))
            }
        }
        for y in 0..<height {
            let gy = Int((Double(y) / cell + 0.5).rounded(.down))
            for x in 0..<width {
                let gx = Int((Double(x) / cell + 0.5).rounded(.down))
                var best = 0, bestD = Double.infinity, second = Double.infinity
                for r in max(0, gy - 1)...min(rows - 1, gy + 1) {
                    for c in max(0, gx - 1)...min(columns - 1, gx + 1) {
                        let s = seeds[r * columns + c]
                        let d = (s.x - Double(x)) * (s.x - Double(x)) + (s.y - Double(y)) * (s.y - Double(y))
                        if d < bestD { second = bestD; bestD = d; best = r * columns + c } else if d < second { second = d }
                    }
                }
                let s = seeds[best]
                // Field margins: a grassy strip where two parcels meet.
                let margin = second.squareRoot() - bestD.squareRoot() < 5
                let along = Double(x) * cos(s.angle) + Double(y) * sin(s.angle)
                let rowsTexture = 0.5 + 0.5 * sin(along / s.period * 2 * .pi)
                let patch = valueNoise(Double(x), Double(y), scale: 60, salt: 11)
                let grain = hash(x, y, 3)
                let shade = 0.86 + 0.1 * rowsTexture + 0.08 * patch + 0.06 * grain
                let base = margin ? (104.0, 128.0, 70.0) : s.colour
                set(x, y, (base.0 * shade, base.1 * shade, base.2 * shade))
            }
        }
    }

    /// A field complex: one farm's block of large parcels sown alike, with rows in one direction,
    /// inside a hedge.
    mutating func drawFieldComplex() {
        guard let c = Layout(width: width, height: height).complex else { return }
        let (x0, y0, x1, y1) = (Int(c[0]), Int(c[1]), Int(c[2]), Int(c[3]))
        for y in y0..<y1 {
            for x in x0..<x1 {
                let hedge = min(x - x0, x1 - 1 - x, y - y0, y1 - 1 - y) < 8
                // Tracks between the parcels, every 750 px.
                let track = (x - x0) % 750 < 4 || (y - y0) % 800 < 4
                let rows = 0.5 + 0.5 * sin(Double(x + y / 3) / 7 * 2 * .pi)
                let shade = 0.9 + 0.08 * rows + 0.05 * valueNoise(Double(x), Double(y), scale: 90, salt: 17) + 0.04 * hash(x, y, 23)
                let base: (Double, Double, Double) = hedge ? (58, 92, 46) : track ? (150, 140, 112) : (206, 184, 88)
                set(x, y, (base.0 * shade, base.1 * shade, base.2 * shade))
            }
        }
    }

    /// A forest: a blob with a canopy texture.
    mutating func drawForest() {
        let (cx, cy, radius) = Layout(width: width, height: height).forest
        blob(cx: cx, cy: cy, radius: radius, wobble: 0.3, salt: 21) { canvas, x, y, _ in
            let canopy = valueNoise(Double(x), Double(y), scale: 7, salt: 5)
            let shade = 0.7 + 0.5 * canopy
            canvas.set(x, y, (44 * shade, 78 * shade, 40 * shade))
        }
    }

    /// A lake with a darker centre and a river winding across the scene.
    mutating func drawWater() {
        let (cx, cy, radius) = Layout(width: width, height: height).lake
        blob(cx: cx, cy: cy, radius: radius, wobble: 0.25, salt: 31) { canvas, x, y, depth in
            let ripple = valueNoise(Double(x), Double(y), scale: 14, salt: 9)
            let d = min(1, depth * 2.5)
            canvas.set(x, y, (40 - 14 * d + 8 * ripple, 78 - 20 * d + 8 * ripple, 104 - 6 * d + 8 * ripple))
            canvas.water[y * canvas.width + x] = true
        }
        // River: a sinuous band from the lake to the bottom-right corner.
        var points: [(Double, Double)] = []
        let start = (cx + radius * 0.8, cy), end = (Double(width) * 1.02, Double(height) * 0.93)
        for i in 0...60 {
            let t = Double(i) / 60
            let wiggle = sin(t * 9) * Double(height) * 0.05
            points.append((start.0 + (end.0 - start.0) * t, start.1 + (end.1 - start.1) * t + wiggle))
        }
        stroke(points, halfWidth: 9, edge: 3) { canvas, x, y, inner in
            if inner {
                let ripple = valueNoise(Double(x), Double(y), scale: 9, salt: 13)
                canvas.set(x, y, (34 + 8 * ripple, 70 + 8 * ripple, 98 + 8 * ripple))
                canvas.water[y * canvas.width + x] = true
            } else {
                canvas.set(x, y, (92, 112, 70))  // riverbank
            }
        }
    }

    /// A main road across the scene, a crossing road, and a dirt track.
    mutating func drawRoads() {
        let w = Double(width), h = Double(height)
        var main: [(Double, Double)] = []
        for i in 0...40 {
            let t = Double(i) / 40
            main.append((-20 + (w + 40) * t, h * 0.42 + sin(t * 3.2) * h * 0.06))
        }
        var crossing: [(Double, Double)] = []
        for i in 0...40 {
            let t = Double(i) / 40
            crossing.append((w * 0.58 + sin(t * 2.5) * w * 0.03, -20 + (h + 40) * t))
        }
        let track = [(w * 0.05, h * 0.1), (w * 0.3, h * 0.2), (w * 0.45, h * 0.38)]
        roads = [main, crossing]
        stroke(track, halfWidth: 3, edge: 0) { canvas, x, y, _ in
            canvas.set(x, y, (170, 150, 120))
        }
        for road in roads {
            stroke(road, halfWidth: 7, edge: 2) { canvas, x, y, inner in
                let grain = hash(x, y, 17)
                if inner {
                    canvas.set(x, y, (104 + 12 * grain, 104 + 12 * grain, 108 + 12 * grain))
                } else {
                    canvas.set(x, y, (170, 168, 160))  // kerb
                }
            }
        }
    }

    /// Houses with pitched roofs and shadows along the roads, near the crossing.
    mutating func drawVillage() {
        let roofs: [(Double, Double, Double)] = [(168, 74, 58), (150, 62, 52), (120, 118, 122), (186, 96, 70), (96, 92, 96)]
        let crossX = Double(width) * 0.58, crossY = Double(height) * 0.42
        let reach = Double(min(width, height)) * 0.35
        for road in roads {
            for k in 0..<(road.count - 1) {
                let (x0, y0) = road[k], (x1, y1) = road[k + 1]
                let length = ((x1 - x0) * (x1 - x0) + (y1 - y0) * (y1 - y0)).squareRoot()
                guard length > 0 else { continue }
                let (ux, uy) = ((x1 - x0) / length, (y1 - y0) / length)
                var s = 10.0
                while s < length - 10 {
                    let px = x0 + ux * s, py = y0 + uy * s
                    let near = ((px - crossX) * (px - crossX) + (py - crossY) * (py - crossY)).squareRoot()
                    if near < reach {
                        for side in [-1.0, 1.0] where random.unit() < 0.8 {
                            let long = random.range(16, 30), wide = random.range(10, 16)
                            let offset = 7 + 6 + wide / 2 + random.range(0, 8)
                            let bx = px - uy * offset * side, by = py + ux * offset * side
                            house(cx: bx, cy: by, ux: ux, uy: uy, long: long, wide: wide,
                                  roof: roofs[Int(random.next() % UInt64(roofs.count))])
                        }
                    }
                    s += random.range(30, 44)
                }
            }
        }
    }

    /// A rectangle aligned with (ux, uy), with a roof ridge and a shadow to the south-east.
    mutating func house(cx: Double, cy: Double, ux: Double, uy: Double, long: Double, wide: Double, roof: (Double, Double, Double)) {
        let reach = Int((long + wide) / 2) + 8
        let x0 = max(0, Int(cx) - reach), x1 = min(width - 1, Int(cx) + reach)
        let y0 = max(0, Int(cy) - reach), y1 = min(height - 1, Int(cy) + reach)
        guard x0 <= x1, y0 <= y1 else { return }
        // Skip houses that would stand in water.
        let ci = Int(cy) * width + Int(cx)
        if ci >= 0, ci < water.count, water[ci] { return }
        func inside(_ x: Double, _ y: Double) -> (Bool, Double) {
            let dx = x - cx, dy = y - cy
            let a = dx * ux + dy * uy, b = -dx * uy + dy * ux
            return (abs(a) <= long / 2 && abs(b) <= wide / 2, b / (wide / 2))
        }
        for y in y0...y1 {
            for x in x0...x1 {
                let (shadowed, _) = inside(Double(x) - 5, Double(y) - 5)
                if shadowed, !inside(Double(x), Double(y)).0 { set(x, y, (30, 34, 30), alpha: 0.55) }
            }
        }
        for y in y0...y1 {
            for x in x0...x1 {
                let (hit, across) = inside(Double(x), Double(y))
                guard hit else { continue }
                // The two roof slopes catch the light differently.
                let light = across < 0 ? 1.08 : 0.82
                let ridge = abs(across) < 0.08 ? 0.7 : 1
                set(x, y, (min(255, roof.0 * light * ridge), min(255, roof.1 * light * ridge), min(255, roof.2 * light * ridge)))
            }
        }
    }

    /// Calls `paint` for every pixel of a wobbly disc; `depth` is 0 at the rim and grows inwards.
    mutating func blob(cx: Double, cy: Double, radius: Double, wobble: Double, salt: UInt64,
                       paint: (inout Canvas, Int, Int, Double) -> Void) {
        let phases = (0..<4).map { _ in random.range(0, 2 * .pi) }
        let reach = Int(radius * (1 + wobble)) + 2
        let x0 = max(0, Int(cx) - reach), x1 = min(width - 1, Int(cx) + reach)
        let y0 = max(0, Int(cy) - reach), y1 = min(height - 1, Int(cy) + reach)
        guard x0 <= x1, y0 <= y1 else { return }
        for y in y0...y1 {
            for x in x0...x1 {
                let dx = Double(x) - cx, dy = Double(y) - cy
                let angle = atan2(dy, dx)
                var r = radius
                for (k, phase) in phases.enumerated() { r += radius * wobble / Double(k + 1) * sin(Double(k + 2) * angle + phase) / 2 }
                let d = (dx * dx + dy * dy).squareRoot()
                if d < r { paint(&self, x, y, (r - d) / radius) }
            }
        }
    }

    /// Calls `paint` for pixels within `halfWidth + edge` of a polyline (`inner` within `halfWidth`).
    mutating func stroke(_ points: [(Double, Double)], halfWidth: Double, edge: Double,
                         paint: (inout Canvas, Int, Int, Bool) -> Void) {
        guard points.count >= 2 else { return }
        let outer = halfWidth + edge
        let xs = points.map(\.0), ys = points.map(\.1)
        let x0 = max(0, Int((xs.min() ?? 0) - outer)), x1 = min(width - 1, Int((xs.max() ?? 0) + outer) + 1)
        let y0 = max(0, Int((ys.min() ?? 0) - outer)), y1 = min(height - 1, Int((ys.max() ?? 0) + outer) + 1)
        guard x0 <= x1, y0 <= y1 else { return }
        // Per segment, so that each pixel is measured only against the segments near it.
        var distance = [Double](repeating: .infinity, count: (x1 - x0 + 1) * (y1 - y0 + 1))
        let rowLength = x1 - x0 + 1
        for k in 0..<(points.count - 1) {
            let (ax, ay) = points[k], (bx, by) = points[k + 1]
            let sx0 = max(x0, Int(min(ax, bx) - outer)), sx1 = min(x1, Int(max(ax, bx) + outer) + 1)
            let sy0 = max(y0, Int(min(ay, by) - outer)), sy1 = min(y1, Int(max(ay, by) + outer) + 1)
            guard sx0 <= sx1, sy0 <= sy1 else { continue }
            let (vx, vy) = (bx - ax, by - ay)
            let lengthSquared = max(vx * vx + vy * vy, 1e-9)
            for y in sy0...sy1 {
                for x in sx0...sx1 {
                    let (px, py) = (Double(x) + 0.5 - ax, Double(y) + 0.5 - ay)
                    let t = max(0, min(1, (px * vx + py * vy) / lengthSquared))
                    let (dx, dy) = (px - t * vx, py - t * vy)
                    let i = (y - y0) * rowLength + (x - x0)
                    distance[i] = min(distance[i], (dx * dx + dy * dy).squareRoot())
                }
            }
        }
        for y in y0...y1 {
            for x in x0...x1 {
                let d = distance[(y - y0) * rowLength + (x - x0)]
                if d <= outer { paint(&self, x, y, d <= halfWidth) }
            }
        }
    }

    func planes() -> [UInt8] {
        let plane = width * height
        var out = [UInt8](repeating: 0, count: plane * 3)
        for i in 0..<plane {
            for c in 0..<3 { out[c * plane + i] = UInt8(max(0, min(255, rgb[i * 3 + c].rounded()))) }
        }
        return out
    }
}
