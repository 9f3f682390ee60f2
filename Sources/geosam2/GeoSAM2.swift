import ArgumentParser
import GeoSegment

@main
struct GeoSAM2: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "geosam2",
        abstract: "Segment objects in satellite and aerial imagery with SAM2, natively.",
        version: GeoSAM2Version.current,
        subcommands: [Encode.self, Segment.self, Generate.self, Serve.self, Sample.self, Verify.self, Info.self, Predict.self, Inspect.self, TileImage.self, Bench.self]
    )
}
