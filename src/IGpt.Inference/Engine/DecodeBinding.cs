using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference.Engine;

/// <summary>
/// Everything one decode step over a run of slots binds, created once (fixed addresses, as CUDA graphs need):
/// OrtValues over the slots' inputs, mask, logits and KV rows in <see cref="DecoderBuffers"/>, bound as both past
/// and present. A whole step binds slots 0..slots-1; a row lane binds its share of a step's rows.
/// </summary>
internal sealed class DecodeBinding : Cpu.IStepLane
{
    private readonly OrtValue _ids, _pos, _mask, _logits;
    private readonly OrtValue[] _kv;
    private readonly RunOptions _runOptions;
    private readonly bool _ownsRunOptions;

    public OrtIoBinding Binding { get; }
    /// <summary>The session this binding runs on (the decoder's, or its one-thread session).</summary>
    public InferenceSession Session { get; }

    /// <param name="first">The first slot (a row lane binds a part of the step's rows; else 0).</param>
    /// <param name="runOptions">
    /// The options to run with; null: its own (lanes run concurrently; with CUDA graphs each shape is its own graph,
    /// <paramref name="graphId"/>).
    /// </param>
    /// <param name="kv">KV views to bind instead of the slots' (owned from here on): the compressed cache's fp32 row.</param>
    public DecodeBinding(DecoderGraph graph, DecoderBuffers buffers, InferenceSession session, int slots, int first,
        RunOptions? runOptions, int? graphId = null, OrtValue[]? kv = null)
    {
        var info = buffers.Memory.Info;
        int maxBatch = buffers.MaxBatch, positions = buffers.Positions, vocab = graph.Vocab;
        var ids = buffers.BoundInputs + first * 8;
        var pos = buffers.BoundInputs + (maxBatch + first) * 8;
        var mask = buffers.BoundInputs + 2 * maxBatch * 8 + (nint)((long)first * positions * 8);
        _ids = OrtValue.CreateTensorValueWithData(info, TensorElementType.Int64, [slots, 1], ids, slots * 8L);
        _pos = OrtValue.CreateTensorValueWithData(info, TensorElementType.Int64, [slots, 1], pos, slots * 8L);
        // The mask is always n_positions wide; a row's sum is its length (GQA reads only the sums).
        _mask = OrtValue.CreateTensorValueWithData(info, TensorElementType.Int64, [slots, positions], mask, slots * 8L * positions);
        // Last position only: [slots, 1, vocab].
        _logits = OrtValue.CreateTensorValueWithData(info, TensorElementType.Float, [slots, 1, vocab],
            buffers.BoundLogits + (nint)(first * 4L * vocab), slots * 4L * vocab);
        _kv = kv ?? graph.CreateKvViews(buffers, slots, first);
        if (graphId is not null && runOptions is not null) throw new ArgumentException("a CUDA graph's binding runs with its own options", nameof(graphId));
        Session = session;
        _ownsRunOptions = runOptions is null;
        _runOptions = runOptions ?? new RunOptions();
        if (graphId is { } id)
            _runOptions.AddRunConfigEntry("gpu_graph_id", id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Binding = session.CreateIoBinding();
        graph.Bind(Binding, _ids, _pos, _mask, _logits, _kv);
    }

    /// <summary>Runs the bound step (or a lane's share of it; <paramref name="lane"/> is not needed).</summary>
    public void Run(int lane) => Session.RunWithBinding(_runOptions, Binding);

    public void Dispose()
    {
        Binding.Dispose();
        if (_ownsRunOptions) _runOptions.Dispose();
        _ids.Dispose();
        _pos.Dispose();
        _mask.Dispose();
        _logits.Dispose();
        foreach (var v in _kv) v.Dispose();
    }
}
