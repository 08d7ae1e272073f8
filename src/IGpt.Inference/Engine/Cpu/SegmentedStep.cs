using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// A CPU decode step run as the package's step segments (files.decoder.cpu.step_segments, models/README.md):
/// segment 0 embeds the tokens and projects layer 0's q, k and v; <see cref="CachedAttention"/> runs the
/// layer's attention over the decoder's KV cache (fp32 or compressed); segment i+1 finishes layer i and projects layer i+1's
/// q, k and v; the last one ends in the logits. The step's rows are split into lanes (<see cref="LaneRunner{TLane}"/>),
/// and each lane runs its rows through every segment and attention on its own: the segment sessions have one
/// intra-op thread and are run concurrently, so a step hands work to another thread once, not once per op.
/// Pays off when attention's memory traffic dominates (several rows, long caches), above all when rows share
/// a prompt (<see cref="SegmentCostRule"/>). Reads the step's ids and positions from, and writes the logits to,
/// the decoder's <see cref="DecoderBuffers"/>; its own activations are allocated once.
/// Owned by <see cref="KvCacheDecoder"/>; not thread-safe.
/// </summary>
internal sealed unsafe class SegmentedStep : IDisposable
{
    private readonly InferenceSession[] _segments;
    private readonly CachedAttention _attention;
    private readonly DecoderBuffers _buffers;
    private readonly int _layers, _embd, _vocab;
    private readonly NativeBuffer<float> _hidden0, _hidden1, _qkv, _attn;  // [MaxBatch, C] x 2, [MaxBatch, 3C], [MaxBatch, C]
    private readonly LaneRunner<Lane> _lanes;
    private readonly RunOptions _runOptions = new();
    private bool _disposed;

    /// <param name="segments">The n_layer + 1 segment sessions (one intra-op thread each), in order; owned once this returns.</param>
    /// <param name="buffers">The decoder's buffers (not owned): its KV cache, step inputs and logits.</param>
    /// <param name="team">The step threads (the decoder's; null: the caller alone); one lane per thread.</param>
    public SegmentedStep(InferenceSession[] segments, ModelManifest manifest, DecoderBuffers buffers, WorkerTeam? team,
        AttentionKernel kernel)
    {
        var a = manifest.Architecture;
        (_layers, _embd, _vocab) = (a.NLayer, a.NEmbd, manifest.VocabSize);
        if (segments.Length != _layers + 1)
            throw new ModelPackageException($"step segments: {segments.Length} graphs for {_layers} layers (expected {_layers + 1})");
        if (kernel == AttentionKernel.None) throw new ArgumentException("step segments need attention kernels", nameof(kernel));
        _segments = segments;
        _buffers = buffers;
        CheckGraphs();
        int maxBatch = buffers.MaxBatch;
        _attention = new CachedAttention(a.NHead, a.HeadSize, a.NPositions, maxBatch, team?.Threads ?? 1, kernel == AttentionKernel.Vectorized,
            buffers.Element);
        _hidden0 = new NativeBuffer<float>((long)maxBatch * _embd);
        _hidden1 = new NativeBuffer<float>((long)maxBatch * _embd);
        _qkv = new NativeBuffer<float>((long)maxBatch * 3 * _embd);
        _attn = new NativeBuffer<float>((long)maxBatch * _embd);
        _lanes = new LaneRunner<Lane>(team, (first, count) => new Lane(this, first, count));
    }

    /// <summary>
    /// One step over rows 0..rows-1, whose token ids and positions are already in the decoder's input buffers.
    /// Logits land in the decoder's logits buffer. Returns the cached positions the step's attention read per layer and
    /// head (the shared prompt entries once per lane).
    /// </summary>
    public long Run(int rows, ReadOnlySpan<int> positions, ReadOnlySpan<int> groups, ReadOnlySpan<int> sharedLengths)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _attention.CheckGroups(rows, positions, groups, sharedLengths);
        int lanes = _lanes.Prepare(rows);
        long read = 0, own = 0;
        for (int lane = 0; lane < lanes; lane++)
        {
            var (first, count) = LaneRunner.LaneRows(rows, lanes, lane);
            _attention.Plan(lane, first, count, positions, groups, sharedLengths);
            read += _attention.PositionsRead(lane);
            own += _attention.OwnPositionsRead(lane);
        }
        _attention.ChoosePrefetch(own, _layers);
        _lanes.Run(lanes);
        return read;
    }

    private void CheckGraphs()
    {
        for (int i = 0; i <= _layers; i++)
        {
            var inputs = _segments[i].InputMetadata;
            var outputs = _segments[i].OutputMetadata;
            string[] ins = i == 0 ? ["input_ids", "position_ids"] : ["hidden", "attn"];
            string[] outs = i < _layers ? ["hidden_out", "qkv"] : ["logits"];
            foreach (var name in ins)
                if (!inputs.ContainsKey(name)) throw new ModelPackageException($"step segment {i}: input '{name}' is missing");
            foreach (var name in outs)
                if (!outputs.ContainsKey(name)) throw new ModelPackageException($"step segment {i}: output '{name}' is missing");
            if (i < _layers && outputs["qkv"].Dimensions is { Length: 3 } q && q[2] > 0 && q[2] != 3 * _embd)
                throw new ModelPackageException($"step segment {i}: qkv is {q[2]} wide, expected 3 x n_embd = {3 * _embd}");
        }
    }

    /// <summary>Frees the lanes' bindings, then the sessions they bind, the attention and the activations.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _lanes.Dispose();
        foreach (var s in _segments) s.Dispose();
        _attention.Dispose();
        _runOptions.Dispose();
        _hidden0.Dispose();
        _hidden1.Dispose();
        _qkv.Dispose();
        _attn.Dispose();
    }

    /// <summary>Every segment's binding for one lane's rows; the hidden state alternates between two buffers.</summary>
    private sealed class Lane : IStepLane
    {
        private readonly SegmentedStep _step;
        private readonly List<OrtValue> _values = [];
        private readonly OrtIoBinding[] _bindings;

        public Lane(SegmentedStep s, int first, int rows)
        {
            _step = s;
            var info = OrtMemoryInfo.DefaultInstance;
            long c = s._embd;
            // Views of rows first..first+rows-1 of [MaxBatch, ...] buffers.
            OrtValue Floats(float* p, long width) =>
                Keep(OrtValue.CreateTensorValueWithData(info, TensorElementType.Float, [rows, 1, width], (IntPtr)(p + first * width), rows * width * 4));
            OrtValue Longs(long* p) =>
                Keep(OrtValue.CreateTensorValueWithData(info, TensorElementType.Int64, [rows, 1], (IntPtr)(p + first), rows * 8L));
            var hidden = new[] { Floats(s._hidden0.Pointer, c), Floats(s._hidden1.Pointer, c) };
            var qkv = Floats(s._qkv.Pointer, 3 * c);
            var attn = Floats(s._attn.Pointer, c);
            _bindings = new OrtIoBinding[s._layers + 1];
            for (int i = 0; i <= s._layers; i++)
            {
                var b = _bindings[i] = s._segments[i].CreateIoBinding();
                if (i == 0)
                {
                    b.BindInput("input_ids", Longs(s._buffers.Ids));
                    b.BindInput("position_ids", Longs(s._buffers.StepPositions));
                }
                else
                {
                    b.BindInput("hidden", hidden[(i - 1) % 2]);
                    b.BindInput("attn", attn);
                }
                if (i < s._layers)
                {
                    b.BindOutput("hidden_out", hidden[i % 2]);
                    b.BindOutput("qkv", qkv);
                }
                else
                    b.BindOutput("logits", Floats(s._buffers.Logits, s._vocab));
            }
        }

        public void Run(int lane)
        {
            var s = _step;
            var kv = s._buffers.Kv;
            for (int i = 0; i <= s._layers; i++)
            {
                s._segments[i].RunWithBinding(s._runOptions, _bindings[i]);
                if (i < s._layers) s._attention.Run(lane, s._qkv.Pointer, (void*)kv[2 * i], (void*)kv[2 * i + 1], s._attn.Pointer);
            }
        }

        private OrtValue Keep(OrtValue v)
        {
            _values.Add(v);
            return v;
        }

        public void Dispose()
        {
            foreach (var b in _bindings) b.Dispose();
            foreach (var v in _values) v.Dispose();
        }
    }
}
