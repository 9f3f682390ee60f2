import ArgumentParser
import Foundation
import GeoSegment
import Kernels
import SAM2

/// How a command names its model.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "SAM2 checkpoint (Meta's .pt, or .safetensors with the official key names), or a preset name in the model cache (tiny, small, base_plus, large).")
    var model: String

    @Option(name: .long, help: ArgumentHelp(
        "Architecture as JSON (for checkpoints that are not one of Meta's presets).", valueName: "json"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp(
        "Force a preset instead of inferring it from the checkpoint: \(SAM2Preset.allCases.map(\.rawValue).joined(separator: ", ")).",
        valueName: "preset"))
    var preset: String?

    @Option(name: .long, help: ArgumentHelp(
        "Image-encoder precision: auto (default: bf16 where the CPU has AVX512_BF16, int16 where it has AVX2 but no AVX-512, else fp32), fp32 (exact: parity with the official code), bf16 (AVX512_BF16) or int16 (AVX2).",
        valueName: "precision"))
    var precision: String = "auto"

    @Option(name: .customLong("reduced-plan"), help: ArgumentHelp(
        "Study only: reduced-precision products per trunk block, BLOCKS:OPS;… (OPS from q, a, p, m), in --precision's arithmetic (auto: the CPU's).",
        visibility: .private))
    var reducedPlan: String?

    /// The precision `--precision` asks for, `auto` resolved for this CPU.
    func encoderPrecision() throws -> EncoderPrecision {
        let chosen: EncoderPrecision
        switch precision.lowercased() {
        case "auto": return .automatic
        case "fp32", "float32": chosen = .float32
        case "bf16", "bfloat16": chosen = .bfloat16
        case "int16", "fixed16": chosen = .fixed16
        default: throw CLIError("unknown precision \(precision); choose auto, fp32, bf16 or int16")
        }
        guard chosen.isAvailable else {
            throw CLIError("--precision \(chosen.rawValue) needs \(chosen.requirement), which this one is not (use auto or fp32)")
        }
        return chosen
    }

    /// Encodes `picture` at the chosen precision (or the study's `--reduced-plan`).
    func encode(_ picture: RGBImage, with model: SAM2Model) throws -> ImageFeatures {
        if let reducedPlan {
            guard let kind = try encoderPrecision().reduced ?? Accelerated.defaultReduced else {
                throw CLIError("--reduced-plan needs a reduced precision, and this CPU has no default one (use --precision int16 or bf16)")
            }
            guard let plan = ReducedPrecisionPlan(parsing: reducedPlan, precision: kind) else {
                throw CLIError("--reduced-plan \(reducedPlan): not BLOCKS:OPS;…")
            }
            return try model.encode(picture, reducedPlan: plan)
        }
        return try model.encode(picture, precision: try encoderPrecision())
    }

    func configuration() throws -> SAM2Configuration? {
        if let config {
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: config)) } catch {
                throw CLIError("cannot read configuration \(config): \(error.localizedDescription)")
            }
            do { return try JSONDecoder().decode(SAM2Configuration.self, from: data) } catch {
                throw CLIError("configuration \(config) is not valid: \(error)")
            }
        }
        if let preset {
            guard let p = SAM2Preset(rawValue: preset) else {
                throw CLIError("unknown preset \(preset); choose one of \(SAM2Preset.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return p.configuration
        }
        return nil
    }

    /// The checkpoint file `--model` names.
    func checkpointURL() throws -> URL { try ModelCatalog.resolve(model).url }

    func loadModel() throws -> SAM2Model {
        try SAM2Model.load(contentsOf: try checkpointURL(), configuration: try configuration())
    }

    /// The model with what identifies it in a feature store.
    func loadEncoderModel() throws -> EncoderModel {
        let url = try checkpointURL()
        let model = try SAM2Model.load(contentsOf: url, configuration: try configuration())
        let preset = config == nil ? (try? SAM2Model.inspect(contentsOf: url).preset.rawValue) : nil
        return EncoderModel(model: model, checkpointSHA256: try FileDigest.sha256(of: url), preset: preset,
                            checkpointPath: url.standardizedFileURL.path)
    }
}

/// A one-line error for the user; ArgumentParser prints it to stderr and exits non-zero.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
