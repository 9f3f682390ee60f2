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
        return try SAM2Model(weights: officialNames(ArchiveWeights(archive: archive)), configuration: configuration)
    }

    /// The weights under Meta's key names, whichever naming the file uses.
    static func officialNames(_ weights: any WeightProvider) -> any WeightProvider {
        HuggingFaceNaming.applies(to: weights) ? HuggingFaceNaming(base: weights) : weights
    }

    /// Opens a checkpoint and names the preset it holds, without building the model.
    public static func inspect(contentsOf url: URL) throws -> (preset: SAM2Preset, tensorCount: Int) {
        do {
            let file = ArchiveWeights(archive: try TensorArchives.open(url))
            return (try CheckpointInspector.inferPreset(officialNames(file)), file.tensorNames.count)
        } catch let error as TensorIOError {
            throw SAM2Error(error.description)
        }
    }
}
