import Kernels

/// An 8-bit RGB image, row-major, channels interleaved (`[H, W, 3]`).
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    /// `height · width · 3` bytes, R G B per pixel.
    public let pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) throws {
        guard width > 0, height > 0 else { throw SAM2Error("image must not be empty (got \(width)×\(height))") }
        guard pixels.count == width * height * 3 else {
            throw SAM2Error("image of \(width)×\(height) needs \(width * height * 3) bytes, got \(pixels.count)")
        }
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// `SAM2Transforms` (`sam2/utils/transforms.py`): input normalisation, coordinate mapping and
/// mask postprocessing.
public enum Transforms {
    static let mean: [Float] = [0.485, 0.456, 0.406]
    static let std: [Float] = [0.229, 0.224, 0.225]

    /// `ToTensor` → `Resize((1024, 1024))` (antialiased bilinear, aspect ratio *not* kept) →
    /// `Normalize`. Returns `[3, 1024, 1024]`.
    public static func preprocess(_ image: RGBImage) -> Tensor {
        let (h, w) = (image.height, image.width)
        var planes = Tensor(shape: [3, h, w])
        image.pixels.withUnsafeBufferPointer { src in
            let dst = planes.mutablePointer
            for p in 0..<(h * w) {
                // Parity: ToTensor divides in float32 (`x.float().div(255)`).
                for c in 0..<3 { dst[c * h * w + p] = Float(src[p * 3 + c]) / 255 }
            }
        }
        let size = SAM2Configuration.imageSize
        var resized = Resize.antialiasedBilinear(planes, height: size, width: size)
        // Parity: Normalize runs after the resize, as (x − mean) / std.
        let x = resized.mutablePointer
        for c in 0..<3 {
            let (m, s) = (mean[c], std[c])
            for i in (c * size * size)..<((c + 1) * size * size) { x[i] = (x[i] - m) / s }
        }
        return resized
    }

    /// `transform_coords(normalize=True)`: pixel coordinates of the original image to the 1024
    /// frame, `x·1024/W`, `y·1024/H` (each axis by its own size).
    static func toModelFrame(x: Float, y: Float, width: Int, height: Int) -> (x: Float, y: Float) {
        let size = Float(SAM2Configuration.imageSize)
        return ((x / Float(width)) * size, (y / Float(height)) * size)
    }

    /// `postprocess_masks`: bilinear upsampling of the low-resolution logits straight to the
    /// original size (no antialias, no intermediate 1024 step).
    public static func upsample(_ logits: Tensor, height: Int, width: Int) -> Tensor {
        Resize.bilinear(logits, height: height, width: width)
    }
}
