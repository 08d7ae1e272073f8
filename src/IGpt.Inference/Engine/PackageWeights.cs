using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference.Engine;

/// <summary>
/// A format version 2 package's fp32 weights file, read once into host memory and given to every CPU session of the package
/// as shared initializers (SessionOptions.AddInitializer), with one PrePackedWeightsContainer: ONNX Runtime then packs a
/// MatMul weight once for all the sessions that multiply by it (the decoder, its one-thread twin, the step segments and the
/// classifier), where each session would otherwise pack its own copy. Holding the bytes also keeps a served model
/// independent of its files: ONNX Runtime would map them, and a file overwritten in place would take the mapped pages away.
/// </summary>
internal sealed unsafe class PackageWeights : IDisposable
{
    private readonly ModelManifest _manifest;
    private readonly Dictionary<string, NativeBuffer<byte>> _files = [];
    private readonly Dictionary<(string File, long Offset, TensorElementType Type, string Shape), OrtValue> _values = [];  // one per tensor
    private readonly Dictionary<string, List<(string Name, OrtValue Value)>> _byGraph = [];
    private readonly Dictionary<string, List<(OnnxInitializers.ExternalTensor Tensor, NativeBuffer<byte> File)>> _tensors = [];  // by graph, read once
    private int _disposed;

    private PackageWeights(ModelManifest manifest) => _manifest = manifest;

    /// <summary>Shared between the package's CPU sessions (it must outlive them).</summary>
    public PrePackedWeightsContainer PrePacked { get; } = new();

    /// <summary>The package's weights (each file read when a graph first needs it); null for a version 1 package, whose graphs hold their own.</summary>
    public static PackageWeights? For(ModelManifest manifest) => manifest.Files.Weights.Count == 0 ? null : new PackageWeights(manifest);

    private NativeBuffer<byte>? File(string location)
    {
        if (_files.TryGetValue(location, out var read)) return read;
        // fp32 only. A package's fp16 graphs read weights.data too, through a Cast per weight that ONNX Runtime folds into
        // a float16 initializer of the session's own (shared initializers are folded like the others). Packages exported
        // before kept fp16 copies in weights.fp16.data, left to ONNX Runtime: its fp16 CPU kernels
        // (SkipSimplifiedLayerNormalization) pre-pack their weights without the shared cache and refuse a shared initializer.
        if (_manifest.Files.Weights.FirstOrDefault(w => w.Path == location && w.Dtype == "float32") is not { } file) return null;
        var data = new NativeBuffer<byte>(file.Bytes);
        _files[file.Path] = data;  // owned from here: Dispose frees it whatever happens below
        try
        {
            using var stream = new FileStream(_manifest.ResolvePath(file.Path), FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            if (stream.Length != file.Bytes) throw new IOException($"it has {stream.Length} bytes, not {file.Bytes}");
            for (long at = 0; at < file.Bytes;)
            {
                int chunk = (int)Math.Min(file.Bytes - at, 1 << 30);
                stream.ReadExactly(new Span<byte>(data.Pointer + at, chunk));
                at += chunk;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelPackageException($"weights file '{file.Path}': cannot read it: {e.Message}", e);
        }
        return data;
    }

    /// <summary>Session options for the graph at <paramref name="relativePath"/>: its external weights as shared initializers.</summary>
    public void AddTo(SessionOptions options, string relativePath)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (!_byGraph.TryGetValue(relativePath, out var initializers))
            _byGraph[relativePath] = initializers = Index(relativePath);
        foreach (var (name, value) in initializers) options.AddInitializer(name, value);
    }

    /// <summary>The graph's initializers that live in this package's weights files, each as an OrtValue over the bytes read.</summary>
    private List<(string, OrtValue)> Index(string relativePath)
    {
        var found = new List<(string, OrtValue)>();
        foreach (var (t, file) in Tensors(relativePath))
        {
            var key = (t.Location, t.Offset, t.ElementType, string.Join(',', t.Dims));
            if (!_values.TryGetValue(key, out var value))
            {
                value = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, t.ElementType, t.Dims, file.Address + (nint)t.Offset, t.Length);
                _values[key] = value;
            }
            found.Add((t.Name, value));
        }
        return found;
    }

    /// <summary>
    /// The fp32 initializers of the graph at <paramref name="relativePath"/> that live in this package's weights files, by name:
    /// where their bytes are in memory (valid while this object lives) and their dims. What the library's own kernels read
    /// (<see cref="Cpu.KernelStep"/>): the same bytes the sessions are given, so nothing is copied.
    /// </summary>
    public Dictionary<string, (IntPtr Address, long[] Dims)> Float32Tensors(string relativePath)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var found = new Dictionary<string, (IntPtr, long[])>();
        foreach (var (t, file) in Tensors(relativePath))
            if (t.ElementType == TensorElementType.Float) found[t.Name] = (file.Address + (nint)t.Offset, t.Dims);
        return found;
    }

    /// <summary>
    /// The graph's initializers stored in the manifest's weights files, checked to lie within the bytes read; the graph is read
    /// once, whether the sessions' initializers or the kernels' tensors ask first.
    /// </summary>
    private List<(OnnxInitializers.ExternalTensor Tensor, NativeBuffer<byte> File)> Tensors(string relativePath)
    {
        if (_tensors.TryGetValue(relativePath, out var known)) return known;
        byte[] graph;
        try { graph = System.IO.File.ReadAllBytes(_manifest.ResolvePath(relativePath)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelPackageException($"{relativePath}: cannot read: {e.Message}", e);
        }
        var found = new List<(OnnxInitializers.ExternalTensor, NativeBuffer<byte>)>();
        foreach (var t in OnnxInitializers.External(graph, relativePath))
        {
            if (File(t.Location) is not { } file) continue;  // not one of the manifest's files: ONNX Runtime reads it
            long elements = t.Dims.Aggregate(1L, (a, d) => a * d);
            int size = t.ElementType == TensorElementType.Float16 ? 2 : t.ElementType == TensorElementType.Float ? 4 : 0;
            if (size == 0 || t.Offset < 0 || t.Length != elements * size || t.Offset > file.Length - t.Length)
                throw new ModelPackageException($"{relativePath}: initializer '{t.Name}' ({t.Length} bytes at {t.Offset}) does not fit '{t.Location}' ({file.Length} bytes)");
            found.Add((t, file));
        }
        _tensors[relativePath] = found;
        return found;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var value in _values.Values) value.Dispose();
        PrePacked.Dispose();
        // The tensors over the bytes and ONNX Runtime's packed copies go before the bytes themselves.
        foreach (var data in _files.Values) data.Dispose();
    }
}
