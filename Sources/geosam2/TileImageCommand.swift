import ArgumentParser
import Foundation
import GeoIO
import GeoSegment

/// `geosam2 tile-image`: the image a tile's features were computed from.
struct TileImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tile-image",
        abstract: "Write the 8-bit RGB image a store's tile was encoded from, as PNG.",
        discussion: """
            The tile of any pyramid level is read again from the store's raster with the store's
            bands, stretch and scale (padding and nodata black): what the model saw. Tile ids are
            those of `geosam2 info --json` and of the `tile` attribute of segmented objects.
            """)

    @Argument(help: "Feature store directory.") var store: String
    @Argument(help: "Tile id, e.g. r0000_c0001 or l1_r0000_c0000.") var tile: String
    @Option(name: .long, help: "Output PNG.") var out: String

    func run() throws {
        let featureStore = try FeatureStore.open(URL(fileURLWithPath: store))
        let (pixels, size) = try RasterEncoder.tileImage(tile, of: featureStore)
        let image = try RasterDataset.create(driver: "MEM", path: "", width: size, height: size, bandCount: 3, dataType: .byte)
        for c in 0..<3 {
            let band = try image.band(c + 1)
            try band.write(values: stride(from: c, to: pixels.count, by: 3).map { pixels[$0] })
        }
        _ = try image.copy(driver: "PNG", path: out)
    }
}
