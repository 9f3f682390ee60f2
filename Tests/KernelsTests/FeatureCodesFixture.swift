/// Random 16-bit feature codes stored channel-major (`[channels][plane]`), with per-channel scales
/// and offsets, in both layouts a tile file uses, and the plain loop's floats laid out
/// channels-last: what the dequantising-transpose kernels are checked against.
struct FeatureCodesFixture {
    let channels: Int, plane: Int
    let scale: [Float], offset: [Float]
    /// `Float(q) · scale[c] + offset[c]` at `[p · channels + c]`, as `FeatureDType.decode` computes it.
    let expected: [Float]
    /// The codes as little-endian int16, one byte into the buffer (files need not align tensors).
    private let signedBytes: [UInt8]
    /// The byte planes of a q16z tile: q = high·256 + low − 32768.
    private let high: [UInt8], low: [UInt8]

    init<Generator: RandomNumberGenerator>(channels: Int, plane: Int, using generator: inout Generator) {
        (self.channels, self.plane) = (channels, plane)
        let codes = (0..<(channels * plane)).map { _ in Int16(truncatingIfNeeded: generator.next()) }
        scale = (0..<channels).map { Float($0 + 1) * 3.1e-4 }
        offset = (0..<channels).map { Float($0) * -0.7 + 0.3 }
        var expected = [Float](repeating: 0, count: channels * plane)
        for c in 0..<channels { for p in 0..<plane { expected[p * channels + c] = Float(codes[c * plane + p]) * scale[c] + offset[c] } }
        self.expected = expected
        var bytes = [UInt8](repeating: 0, count: 1 + 2 * codes.count)
        for (i, q) in codes.enumerated() { (bytes[1 + 2 * i], bytes[2 + 2 * i]) = (UInt8(UInt16(bitPattern: q) & 0xFF), UInt8(UInt16(bitPattern: q) >> 8)) }
        signedBytes = bytes
        high = codes.map { UInt8((UInt16(bitPattern: $0) ^ 0x8000) >> 8) }
        low = codes.map { UInt8(UInt16(bitPattern: $0) & 0xFF) }
    }

    /// Dequantises every run of `runs` with `kernel` (given the signed codes, or with `split` the
    /// byte planes, and an output buffer of NaNs) and returns the output.
    func dequantize(split: Bool, runs: [Range<Int>],
                    _ kernel: (_ signed: UnsafeRawPointer?, _ high: UnsafePointer<UInt8>?, _ low: UnsafePointer<UInt8>?,
                               _ pixels: Range<Int>, _ out: UnsafeMutablePointer<Float>) -> Void) -> [Float] {
        var out = [Float](repeating: .nan, count: channels * plane)
        signedBytes.withUnsafeBytes { b in
            high.withUnsafeBufferPointer { h in
                low.withUnsafeBufferPointer { l in
                    out.withUnsafeMutableBufferPointer { o in
                        for run in runs {
                            kernel(split ? nil : b.baseAddress! + 1, split ? h.baseAddress : nil, split ? l.baseAddress : nil, run,
                                   o.baseAddress!)
                        }
                    }
                }
            }
        }
        return out
    }
}
