using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference.Engine;

/// <summary>
/// The decoder graph's contract (models/README.md): its input and output names, the KV cache's shape and
/// element type, the check of a session against the manifest, and the reference forward without a cache.
/// </summary>
internal sealed class DecoderGraph
{
    private readonly string[] _pastNames, _presentNames;

    public DecoderGraph(ModelManifest manifest, TensorElementType kvType)
    {
        if (kvType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new ArgumentOutOfRangeException(nameof(kvType), kvType, "the KV cache is float32 or float16");
        var a = manifest.Architecture;
        (Layers, Heads, HeadSize, Positions, Vocab) = (a.NLayer, a.NHead, a.HeadSize, a.NPositions, manifest.VocabSize);
        KvType = kvType;
        ElementSize = kvType == TensorElementType.Float16 ? 2 : 4;
        _pastNames = new string[2 * Layers];
        _presentNames = new string[2 * Layers];
        for (int i = 0; i < Layers; i++)
        {
            _pastNames[2 * i] = $"past_key_values.{i}.key";
            _pastNames[2 * i + 1] = $"past_key_values.{i}.value";
            _presentNames[2 * i] = $"present.{i}.key";
            _presentNames[2 * i + 1] = $"present.{i}.value";
        }
    }

    public int Layers { get; }
    public int Heads { get; }
    public int HeadSize { get; }
    public int Positions { get; }
    public int Vocab { get; }
    /// <summary>The KV cache's element type: float32 (Float) or float16 (Float16), and its size in bytes.</summary>
    public TensorElementType KvType { get; }
    public int ElementSize { get; }
    /// <summary>KV input names, key 0, value 0, key 1, ... (the order of <see cref="DecoderBuffers.Kv"/>).</summary>
    public IReadOnlyList<string> PastNames => _pastNames;
    public IReadOnlyList<string> PresentNames => _presentNames;
    /// <summary>Elements of one batch row of one KV buffer: n_head * n_positions * head_size.</summary>
    public long RowStride => (long)Heads * Positions * HeadSize;

    /// <summary>OrtValues over slots firstSlot..firstSlot+rows-1 of every KV buffer (rows are contiguous: batch is outermost).</summary>
    public OrtValue[] CreateKvViews(DecoderBuffers buffers, int rows, int firstSlot = 0) =>
        CreateKvViews(buffers.Kv, buffers.Memory.Info, rows, firstSlot);

    /// <summary>OrtValues over slots firstSlot..firstSlot+rows-1 of KV buffers in the graph's element type (<paramref name="kv"/>: key 0, value 0, ...).</summary>
    public OrtValue[] CreateKvViews(ReadOnlySpan<IntPtr> kv, OrtMemoryInfo info, int rows, int firstSlot = 0)
    {
        var views = new OrtValue[kv.Length];
        long[] shape = [rows, Heads, Positions, HeadSize];
        long offset = firstSlot * RowStride * ElementSize;
        for (int i = 0; i < views.Length; i++)
            views[i] = OrtValue.CreateTensorValueWithData(info, KvType, shape, kv[i] + (nint)offset, rows * RowStride * ElementSize);
        return views;
    }

    /// <summary>Binds a run's inputs, its logits and the KV views, each view as both past and present (the cache is updated in place).</summary>
    public void Bind(OrtIoBinding binding, OrtValue ids, OrtValue positions, OrtValue mask, OrtValue logits, OrtValue[] kv)
    {
        binding.BindInput("input_ids", ids);
        binding.BindInput("position_ids", positions);
        binding.BindInput("attention_mask", mask);
        binding.BindOutput("logits", logits);
        for (int i = 0; i < kv.Length; i++)
        {
            binding.BindInput(_pastNames[i], kv[i]);
            binding.BindOutput(_presentNames[i], kv[i]);
        }
    }

    /// <summary>Throws <see cref="ModelPackageException"/> when the session's inputs and outputs do not match the manifest.</summary>
    public void Check(InferenceSession session)
    {
        var inputs = session.InputMetadata;
        var outputs = session.OutputMetadata;
        foreach (var name in new[] { "input_ids", "position_ids", "attention_mask" }.Concat(_pastNames))
            if (!inputs.ContainsKey(name)) throw new ModelPackageException($"decoder: input '{name}' is missing");
        foreach (var name in _presentNames.Prepend("logits"))
            if (!outputs.ContainsKey(name)) throw new ModelPackageException($"decoder: output '{name}' is missing");
        var past = inputs[_pastNames[0]];
        var expected = KvType == TensorElementType.Float16 ? typeof(Float16) : typeof(float);
        if (past.ElementType != expected)
            throw new ModelPackageException($"decoder: the KV cache ({_pastNames[0]}) is {DtypeName(past.ElementType)}, but the manifest says {DtypeName(expected)}");
        if (inputs["input_ids"].ElementType != typeof(long))
            throw new ModelPackageException($"decoder: input_ids is {inputs["input_ids"].ElementType.Name}, expected int64");
        if (outputs["logits"].ElementType != typeof(float))
            throw new ModelPackageException($"decoder: logits are {DtypeName(outputs["logits"].ElementType)}, expected float32");
        var dims = past.Dimensions;
        if (dims.Length != 4 || (dims[1] > 0 && dims[1] != Heads) || (dims[3] > 0 && dims[3] != HeadSize))
            throw new ModelPackageException($"decoder: past shape [{string.Join(", ", dims)}] does not match n_head {Heads} / head_size {HeadSize}");
        var logits = outputs["logits"].Dimensions;
        if (logits.Length != 3 || (logits[2] > 0 && logits[2] != Vocab))
            throw new ModelPackageException($"decoder: logits shape [{string.Join(", ", logits)}] does not end in vocab_size {Vocab}");
    }

    private static string DtypeName(Type t) => t == typeof(float) ? "float32" : t == typeof(Float16) ? "float16" : t.Name;

    /// <summary>
    /// The whole sequence at batch 1 with an empty past and no shared buffer (no KV cache reuse):
    /// logits [S, vocab]. The reference the cached path is checked against; allocates.
    /// </summary>
    public float[] ForwardWithoutCache(InferenceSession session, RunOptions runOptions, ReadOnlySpan<int> tokens)
    {
        int s = tokens.Length;
        var ids = new long[s];
        var pos = new long[s];
        var mask = new long[s];
        for (int i = 0; i < s; i++) (ids[i], pos[i], mask[i]) = (tokens[i], i, 1);
        var names = new List<string> { "input_ids", "position_ids", "attention_mask" };
        var values = new List<OrtValue>
        {
            OrtValue.CreateTensorValueFromMemory(ids, [1, s]),
            OrtValue.CreateTensorValueFromMemory(pos, [1, s]),
            OrtValue.CreateTensorValueFromMemory(mask, [1, s]),
        };
        try
        {
            foreach (var name in _pastNames)
            {
                names.Add(name);
                values.Add(KvType == TensorElementType.Float16
                    ? OrtValue.CreateTensorValueFromMemory(Array.Empty<Float16>(), [1, Heads, 0, HeadSize])
                    : OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, Heads, 0, HeadSize]));
            }
            using var results = session.Run(runOptions, names, values, ["logits"]);  // host outputs: ORT copies them back
            return results[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }
}
