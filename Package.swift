// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "GeoSAM2",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "geosam2", targets: ["geosam2"]),
        .library(name: "SAM2", targets: ["SAM2"]),
        .library(name: "GeoIO", targets: ["GeoIO"]),
        .library(name: "GeoSegment", targets: ["GeoSegment"]),
        .library(name: "GeoSAM2Server", targets: ["GeoSAM2Server"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
    ],
    targets: [
        // System libraries.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CGDAL", pkgConfig: "gdal", providers: [.apt(["libgdal-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),

        // AVX-512 micro-kernels (GEMM on packed weights, flash-style attention, GELU, LayerNorm),
        // compiled with function-level target attributes and dispatched at run time.
        .target(name: "CKernels"),
        // Tensors and numeric kernels: no model knowledge.
        .target(name: "Kernels", dependencies: ["CBLAS", "CKernels"]),
        // Weight-file containers (PyTorch zip + restricted unpickler, safetensors, NumPy .npy).
        .target(name: "TensorIO", dependencies: ["Kernels"]),
        // Segment Anything 2: one file per upstream module.
        .target(name: "SAM2", dependencies: ["Kernels", "TensorIO"]),
        // Swifty GDAL.
        .target(name: "GeoIO", dependencies: ["CGDAL"]),
        // The domain: tiling, feature stores, encoding, segmentation sessions, export. No HTTP.
        .target(
            name: "GeoSegment",
            dependencies: ["SAM2", "GeoIO", "TensorIO", "Kernels", "CZstd", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // `geosam2 serve`: the web UI and JSON API on Hummingbird. Thin: the work is GeoSegment's.
        .target(
            name: "GeoSAM2Server",
            dependencies: [
                "GeoSegment", "GeoIO", "SAM2",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            resources: [.copy("Resources/Public")]
        ),

        .executableTarget(
            name: "geosam2",
            dependencies: [
                "SAM2", "GeoIO", "TensorIO", "Kernels", "GeoSegment", "GeoSAM2Server",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "CKernels"], resources: [.copy("Fixtures")]),
        .testTarget(name: "TensorIOTests", dependencies: ["TensorIO"], resources: [.copy("Fixtures")]),
        .testTarget(name: "SAM2Tests", dependencies: ["SAM2", "TensorIO"], resources: [.copy("Fixtures")]),
        .testTarget(name: "GeoIOTests", dependencies: ["GeoIO"]),
        .testTarget(name: "GeoSegmentTests", dependencies: ["GeoSegment", "GeoIO", "SAM2", "TensorIO", "Kernels"]),
        .testTarget(
            name: "GeoSAM2ServerTests",
            dependencies: [
                "GeoSAM2Server", "GeoSegment", "GeoIO", "SAM2",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
