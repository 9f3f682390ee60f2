import Kernels

// Building blocks shared by the SAM2 modules (`nn.Linear`, `nn.LayerNorm`, `LayerNorm2d` and
// `MLP` from `sam2/modeling/sam2_utils.py`).

/// `nn.Linear`: `y = x·Wᵀ + b`, with `W` stored `[out, in]`.
struct Linear: Sendable {
    let weight: Tensor
    let bias: Tensor?
    /// The weight repacked for the packed GEMM, done once at load (nil without its kernels).
    let packed: PackedWeight?
    /// The weight's bf16 or 16-bit fixed-point copies for the reduced-precision encoders (Hiera
    /// layers only; nil without the packed kernels).
    let reducedPrecision: ReducedPrecisionWeights?

    /// - Parameter reduced: also keep reduced-precision copies (the CPU's default one packed now).
    init(weight: Tensor, bias: Tensor?, reduced: Bool = false) {
        self.weight = weight
        self.bias = bias
        packed = Accelerated.hasPackedKernels ? PackedWeight(weight) : nil
        reducedPrecision = reduced && Accelerated.hasPackedKernels ? ReducedPrecisionWeights(weight) : nil
    }

    init(_ weights: WeightReader, _ name: String, inFeatures: Int, outFeatures: Int, bias: Bool = true,
         reduced: Bool = false) throws {
        self.init(weight: try weights.load("\(name).weight", [outFeatures, inFeatures]),
                  bias: bias ? try weights.load("\(name).bias", [outFeatures]) : nil, reduced: reduced)
    }

    /// A 1×1 convolution (`[out, in, 1, 1]`) acts on channels-last data as a linear layer.
    init(conv1x1 weights: WeightReader, _ name: String, inChannels: Int, outChannels: Int) throws {
        self.init(weight: try weights.load("\(name).weight", [outChannels, inChannels, 1, 1]).reshaped([outChannels, inChannels]),
                  bias: try weights.load("\(name).bias", [outChannels]))
    }

    var inFeatures: Int { weight.shape[1] }
    var outFeatures: Int { weight.shape[0] }

    func callAsFunction(_ x: Tensor) -> Tensor { GEMM.linear(x, weight: weight, bias: bias, packed: packed) }
}

/// `nn.LayerNorm` over the last dimension; also `LayerNorm2d` on channels-last data.
struct LayerNorm: Sendable {
    let weight: Tensor
    let bias: Tensor
    let eps: Float

    init(_ weights: WeightReader, _ name: String, channels: Int, eps: Float) throws {
        weight = try weights.load("\(name).weight", [channels])
        bias = try weights.load("\(name).bias", [channels])
        self.eps = eps
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var y = x
        Normalization.layerNorm(&y, weight: weight, bias: bias, eps: eps)
        return y
    }

    func apply(_ x: inout Tensor) { Normalization.layerNorm(&x, weight: weight, bias: bias, eps: eps) }

    /// Normalises the rows of a row-major view in place on the calling thread, and stores each
    /// row's mean and 1/sqrt(σ² + eps) at `means` and `inverses` (AVX-512 kernels only).
    func applySingleThreaded(_ x: MutableMatrixView, means: UnsafeMutablePointer<Float>, inverses: UnsafeMutablePointer<Float>) {
        precondition(x.columnStride == 1 && x.rowStride == x.columns && x.columns == weight.count, "layer norm: bad view")
        Normalization.layerNormSingleThreaded(x.base, rows: x.rows, channels: x.columns, weight: weight.pointer, bias: bias.pointer,
                                              eps: eps, means: means, inverses: inverses)
    }
}

/// `MLP` from `sam2_utils.py`: linear layers with an activation between them (not after the last),
/// and an optional sigmoid on the output.
struct MLP: Sendable {
    enum Activation: Sendable { case relu, gelu }

    let layers: [Linear]
    let activation: Activation
    let sigmoidOutput: Bool

    init(_ weights: WeightReader, _ name: String, dimensions: [Int], activation: Activation, sigmoidOutput: Bool = false,
         reduced: Bool = false) throws {
        var layers: [Linear] = []
        for i in 0..<(dimensions.count - 1) {
            layers.append(try Linear(weights, "\(name).layers.\(i)", inFeatures: dimensions[i], outFeatures: dimensions[i + 1],
                                     reduced: reduced))
        }
        self.layers = layers
        self.activation = activation
        self.sigmoidOutput = sigmoidOutput
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var y = x
        for (i, layer) in layers.enumerated() {
            y = layer(y)
            if i < layers.count - 1 {
                switch activation {
                case .relu: Activations.relu(&y)
                case .gelu: Activations.gelu(&y)
                }
            }
        }
        if sigmoidOutput { Activations.sigmoid(&y) }
        return y
    }
}
