namespace IGpt.Inference.Packages;

/// <summary>A model package folder that cannot be served: missing or invalid manifest, missing or corrupt ONNX file.</summary>
public sealed class ModelPackageException(string message, Exception? inner = null) : Exception(message, inner);
