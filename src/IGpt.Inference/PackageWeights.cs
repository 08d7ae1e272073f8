using System.Runtime.InteropServices;
using System.Text;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference;

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
    private readonly Dictionary<string, (nint Data, long Bytes)> _files = [];
    private readonly Dictionary<(string File, long Offset, TensorElementType Type, string Shape), OrtValue> _values = [];  // one per tensor
    private readonly Dictionary<string, List<(string Name, OrtValue Value)>> _byGraph = [];
    private int _disposed;

    private PackageWeights(ModelManifest manifest) => _manifest = manifest;

    /// <summary>Shared between the package's CPU sessions (it must outlive them).</summary>
    public PrePackedWeightsContainer PrePacked { get; } = new();

    /// <summary>The package's weights (each file read when a graph first needs it); null for a version 1 package, whose graphs hold their own.</summary>
    public static PackageWeights? For(ModelManifest manifest) => manifest.Files.Weights.Count == 0 ? null : new PackageWeights(manifest);

    private (nint Data, long Bytes)? File(string location)
    {
        if (_files.TryGetValue(location, out var read)) return read;
        // fp32 only: ONNX Runtime's fp16 CPU kernels (SkipSimplifiedLayerNormalization) pre-pack their weights without
        // the shared cache and refuse a shared initializer; the fp16 graphs run on CUDA, which copies weights to the device.
        if (_manifest.Files.Weights.FirstOrDefault(w => w.Path == location && w.Dtype == "float32") is not { } file) return null;
        var data = (nint)NativeMemory.AlignedAlloc((nuint)Math.Max(file.Bytes, 1), 64);
        _files[file.Path] = (data, file.Bytes);
        try
        {
            using var stream = new FileStream(_manifest.ResolvePath(file.Path), FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            if (stream.Length != file.Bytes) throw new IOException($"it has {stream.Length} bytes, not {file.Bytes}");
            for (long at = 0; at < file.Bytes;)
            {
                int chunk = (int)Math.Min(file.Bytes - at, 1 << 30);
                stream.ReadExactly(new Span<byte>((byte*)data + at, chunk));
                at += chunk;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelPackageException($"weights file '{file.Path}': cannot read it: {e.Message}", e);
        }
        return _files[file.Path];
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
        byte[] graph;
        try { graph = System.IO.File.ReadAllBytes(_manifest.ResolvePath(relativePath)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelPackageException($"{relativePath}: cannot read: {e.Message}", e);
        }
        var found = new List<(string, OrtValue)>();
        foreach (var t in OnnxInitializers.External(graph, relativePath))
        {
            if (File(t.Location) is not { } file) continue;  // not one of the manifest's files: ONNX Runtime reads it
            long elements = t.Dims.Aggregate(1L, (a, d) => a * d);
            int size = t.ElementType == TensorElementType.Float16 ? 2 : t.ElementType == TensorElementType.Float ? 4 : 0;
            if (size == 0 || t.Offset < 0 || t.Length != elements * size || t.Offset > file.Bytes - t.Length)
                throw new ModelPackageException($"{relativePath}: initializer '{t.Name}' ({t.Length} bytes at {t.Offset}) does not fit '{t.Location}' ({file.Bytes} bytes)");
            var key = (t.Location, t.Offset, t.ElementType, string.Join(',', t.Dims));
            if (!_values.TryGetValue(key, out var value))
            {
                value = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, t.ElementType, t.Dims, file.Data + (nint)t.Offset, t.Length);
                _values[key] = value;
            }
            found.Add((t.Name, value));
        }
        return found;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var value in _values.Values) value.Dispose();
        PrePacked.Dispose();
        foreach (var (data, _) in _files.Values) NativeMemory.AlignedFree((void*)data);
    }
}

/// <summary>
/// Reads the externally stored initializers of an ONNX model (ModelProto.graph.initializer with data_location EXTERNAL) straight
/// from the protobuf wire format: name, element type, dims and the location/offset/length of the data. Nothing else is needed
/// to hand ONNX Runtime the same tensors, and the library takes no protobuf dependency for it.
/// </summary>
internal static class OnnxInitializers
{
    public sealed record ExternalTensor(string Name, TensorElementType ElementType, long[] Dims, string Location, long Offset, long Length);

    private const int ModelGraph = 7, GraphInitializer = 5;
    private const int TensorDims = 1, TensorDataType = 2, TensorName = 8, TensorExternalData = 13, TensorDataLocation = 14;

    public static List<ExternalTensor> External(ReadOnlySpan<byte> model, string what)
    {
        try
        {
            var found = new List<ExternalTensor>();
            var r = new Reader(model);
            while (r.Next(out int field, out int wire))
            {
                if (field != ModelGraph || wire != 2) { r.Skip(wire); continue; }
                var graph = new Reader(r.Bytes());
                while (graph.Next(out field, out wire))
                {
                    if (field == GraphInitializer && wire == 2) { if (Tensor(graph.Bytes()) is { } t) found.Add(t); }
                    else graph.Skip(wire);
                }
            }
            return found;
        }
        catch (FormatException e)
        {
            throw new ModelPackageException($"{what}: not an ONNX graph ({e.Message})", e);
        }
    }

    private static ExternalTensor? Tensor(ReadOnlySpan<byte> tensor)
    {
        var r = new Reader(tensor);
        var dims = new List<long>();
        string name = "", location = "";
        long offset = 0, length = -1, dataType = 0, dataLocation = 0;
        while (r.Next(out int field, out int wire))
        {
            switch (field, wire)
            {
                case (TensorDims, 0): dims.Add((long)r.Varint()); break;
                case (TensorDims, 2):
                    var packed = new Reader(r.Bytes());
                    while (!packed.AtEnd) dims.Add((long)packed.Varint());
                    break;
                case (TensorDataType, 0): dataType = (long)r.Varint(); break;
                case (TensorName, 2): name = Encoding.UTF8.GetString(r.Bytes()); break;
                case (TensorDataLocation, 0): dataLocation = (long)r.Varint(); break;
                case (TensorExternalData, 2):
                    var (key, value) = Entry(r.Bytes());
                    if (key == "location") location = value;
                    else if (key == "offset") offset = long.Parse(value, System.Globalization.CultureInfo.InvariantCulture);
                    else if (key == "length") length = long.Parse(value, System.Globalization.CultureInfo.InvariantCulture);
                    break;
                default: r.Skip(wire); break;
            }
        }
        if (dataLocation != 1 || location.Length == 0 || length < 0) return null;
        var type = dataType switch { 1 => TensorElementType.Float, 10 => TensorElementType.Float16, _ => TensorElementType.DataTypeMax };
        return new ExternalTensor(name, type, [.. dims], location, offset, length);
    }

    private static (string Key, string Value) Entry(ReadOnlySpan<byte> entry)
    {
        var r = new Reader(entry);
        string key = "", value = "";
        while (r.Next(out int field, out int wire))
        {
            if (field == 1 && wire == 2) key = Encoding.UTF8.GetString(r.Bytes());
            else if (field == 2 && wire == 2) value = Encoding.UTF8.GetString(r.Bytes());
            else r.Skip(wire);
        }
        return (key, value);
    }

    /// <summary>Protobuf wire format: (field number, wire type) keys, varints, fixed 32/64-bit values, length-delimited bytes.</summary>
    private ref struct Reader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _at;

        public readonly bool AtEnd => _at >= _data.Length;

        public bool Next(out int field, out int wire)
        {
            field = wire = 0;
            if (AtEnd) return false;
            ulong key = Varint();
            field = (int)(key >> 3);
            wire = (int)(key & 7);
            return true;
        }

        public ulong Varint()
        {
            ulong value = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (AtEnd) throw new FormatException("truncated varint");
                byte b = _data[_at++];
                value |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return value;
            }
            throw new FormatException("varint longer than 10 bytes");
        }

        public ReadOnlySpan<byte> Bytes()
        {
            ulong n = Varint();
            if (n > (ulong)(_data.Length - _at)) throw new FormatException("length past the end");
            var bytes = _data.Slice(_at, (int)n);
            _at += (int)n;
            return bytes;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: Advance(8); break;
                case 2: Bytes(); break;
                case 5: Advance(4); break;
                default: throw new FormatException($"wire type {wire}");
            }
        }

        private void Advance(int n)
        {
            if (n > _data.Length - _at) throw new FormatException("value past the end");
            _at += n;
        }
    }
}
