import Foundation
import Kernels
import TensorIO

/// A PyTorch checkpoint or safetensors file seen as a weight source with official key names.
struct ArchiveWeights: WeightProvider {
    let archive: any TensorArchive

    var tensorNames: [String] { archive.tensorNames }
    func shape(of name: String) -> [Int]? { archive.info(name)?.shape }
    func tensor(named name: String) throws -> Tensor {
        do {
            return try archive.tensor(named: name)
        } catch let error as TensorIOError {
            throw SAM2Error(error.description)
        }
    }
}

extension SAM2Model {
    /// Loads a model from Meta's `.pt` checkpoint (`{"model": state_dict}`) or a safetensors file
    /// with the official key names. Video-only keys are ignored.
    /// - Parameter configuration: the architecture; inferred from the tensor shapes when nil.
    public static func load(contentsOf url: URL, configuration: SAM2Configuration? = nil) throws -> SAM2Model {
        let archive: any TensorArchive
        do {
            archive = try TensorArchives.open(url)
        } catch let error as TensorIOError {
            throw SAM2Error(error.description)
        }
        return try SAM2Model(weights: ArchiveWeights(archive: archive), configuration: configuration)
    }

    /// Opens a checkpoint and names the preset it holds, without building the model.
    public static func inspect(contentsOf url: URL) throws -> (preset: SAM2Preset, tensorCount: Int) {
        do {
            let weights = ArchiveWeights(archive: try TensorArchives.open(url))
            return (try CheckpointInspector.inferPreset(weights), weights.tensorNames.count)
        } catch let error as TensorIOError {
            throw SAM2Error(error.description)
        }
    }
}
