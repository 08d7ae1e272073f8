using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// A CPU decode step run as the package's step segments (files.decoder.cpu.step_segments, models/README.md):
/// segment 0 embeds the tokens and projects layer 0's q, k and v; <see cref="CachedAttention"/> runs the
/// layer's attention over the decoder's KV cache; segment i+1 finishes layer i and projects layer i+1's
/// q, k and v; the last one ends in the logits. The step's rows are split into lanes, one per thread, and
/// each lane runs its rows through every segment and attention on its own: the segment sessions have one
/// intra-op thread and are run concurrently, so a step hands work to another thread once, not once per op
/// (with a thread pool per session, waking the pools' threads a dozen times a step cost more than it saved).
/// Pays off when attention's memory traffic dominates (several rows, long caches), above all when rows share
/// a prompt. Every buffer is allocated once and every binding created once per (lane start, lane rows).
/// Owned by <see cref="KvCacheDecoder"/>; not thread-safe.
/// </summary>
internal sealed unsafe class SegmentedStep : IDisposable
{
    private readonly InferenceSession[] _segments;
    private readonly CachedAttention _attention;
    private readonly int _layers, _embd, _vocab, _maxBatch;
    private readonly float* _hidden0, _hidden1, _qkv, _attn;  // [MaxBatch, C] x 2, [MaxBatch, 3C], [MaxBatch, C]
    private readonly Dictionary<(int First, int Count), Binding> _bindings = [];
    private readonly Binding[] _stepLanes;             // this step's lanes' bindings, by lane
    private readonly WorkerTeam? _team;
    private readonly Action<int, int> _runLane;
    private readonly IntPtr[] _kv;                     // the decoder's cache: key 0, value 0, key 1, ...
    private readonly RunOptions _runOptions = new();
    private readonly long* _ids, _positions;
    private readonly float* _logits;
    private bool _disposed;

    /// <param name="segments">The n_layer + 1 segment sessions (one intra-op thread each), in order; owned (disposed) by this object.</param>
    /// <param name="attention">Owned; its lanes are the threads a step's rows are split between.</param>
    /// <param name="ids">The decoder's token id input buffer ([MaxBatch] longs), read by segment 0.</param>
    /// <param name="positions">The decoder's position input buffer ([MaxBatch] longs).</param>
    /// <param name="logits">Where the last segment writes [rows, vocab] logits.</param>
    /// <param name="kv">The decoder's KV buffers, 2 per layer: key 0, value 0, key 1, ...</param>
    /// <param name="team">The step threads (the decoder's; null: the caller alone); one lane per thread.</param>
    public SegmentedStep(InferenceSession[] segments, ModelManifest manifest, int maxBatch, CachedAttention attention,
        WorkerTeam? team, long* ids, long* positions, float* logits, IntPtr[] kv)
    {
        var a = manifest.Architecture;
        (_layers, _embd, _vocab, _maxBatch) = (a.NLayer, a.NEmbd, manifest.VocabSize, maxBatch);
        if (segments.Length != _layers + 1)
            throw new ModelPackageException($"step segments: {segments.Length} graphs for {_layers} layers (expected {_layers + 1})");
        _segments = segments;
        _attention = attention;
        _ids = ids;
        _positions = positions;
        _logits = logits;
        CheckGraphs();
        _hidden0 = NativeBuffer.AllocZeroed<float>((long)maxBatch * _embd);
        _hidden1 = NativeBuffer.AllocZeroed<float>((long)maxBatch * _embd);
        _qkv = NativeBuffer.AllocZeroed<float>((long)maxBatch * 3 * _embd);
        _attn = NativeBuffer.AllocZeroed<float>((long)maxBatch * _embd);
        _team = team;
        _kv = kv;
        _stepLanes = new Binding[attention.Lanes];
        _runLane = RunLane;
    }

    /// <summary>
    /// One step over rows 0..rows-1, whose token ids and positions are already in the decoder's input buffers.
    /// Logits land in the decoder's logits buffer.
    /// </summary>
    public void Run(int rows, ReadOnlySpan<int> positions, ReadOnlySpan<int> groups, ReadOnlySpan<int> sharedLengths)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _attention.CheckGroups(rows, positions, groups, sharedLengths);
        int lanes = Math.Min(rows, _stepLanes.Length);
        for (int lane = 0; lane < lanes; lane++)
        {
            var (first, count) = KvCacheDecoder.LaneRows(rows, lanes, lane);
            _attention.Plan(lane, first, count, positions, groups, sharedLengths);
            if (!_bindings.TryGetValue((first, count), out var b)) _bindings[(first, count)] = b = new Binding(this, first, count);
            _stepLanes[lane] = b;
        }
        if (_team is null) RunLane(0, 0);
        else _team.Run(lanes, _runLane);
    }

    private void RunLane(int lane, int worker)
    {
        var b = _stepLanes[lane];
        for (int i = 0; i <= _layers; i++)
        {
            _segments[i].RunWithBinding(_runOptions, b.Bindings[i]);
            if (i < _layers) _attention.Run(lane, _qkv, (float*)_kv[2 * i], (float*)_kv[2 * i + 1], _attn);
        }
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

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var b in _bindings.Values) b.Dispose();
        foreach (var s in _segments) s.Dispose();
        _attention.Dispose();
        _runOptions.Dispose();
        NativeMemory.AlignedFree(_hidden0);
        NativeMemory.AlignedFree(_hidden1);
        NativeMemory.AlignedFree(_qkv);
        NativeMemory.AlignedFree(_attn);
    }

    /// <summary>Every segment's binding for one lane's rows; the hidden state alternates between two buffers.</summary>
    private sealed class Binding : IDisposable
    {
        private readonly List<OrtValue> _values = [];
        public OrtIoBinding[] Bindings { get; }

        public Binding(SegmentedStep s, int first, int rows)
        {
            var info = OrtMemoryInfo.DefaultInstance;
            long c = s._embd;
            // Views of rows first..first+rows-1 of [MaxBatch, ...] buffers.
            OrtValue Floats(float* p, long width) =>
                Keep(OrtValue.CreateTensorValueWithData(info, TensorElementType.Float, [rows, 1, width], (IntPtr)(p + first * width), rows * width * 4));
            OrtValue Longs(long* p) =>
                Keep(OrtValue.CreateTensorValueWithData(info, TensorElementType.Int64, [rows, 1], (IntPtr)(p + first), rows * 8L));
            var hidden = new[] { Floats(s._hidden0, c), Floats(s._hidden1, c) };
            var qkv = Floats(s._qkv, 3 * c);
            var attn = Floats(s._attn, c);
            Bindings = new OrtIoBinding[s._layers + 1];
            for (int i = 0; i <= s._layers; i++)
            {
                var b = Bindings[i] = s._segments[i].CreateIoBinding();
                if (i == 0)
                {
                    b.BindInput("input_ids", Longs(s._ids));
                    b.BindInput("position_ids", Longs(s._positions));
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
                    b.BindOutput("logits", Floats(s._logits, s._vocab));
            }
        }

        private OrtValue Keep(OrtValue v)
        {
            _values.Add(v);
            return v;
        }

        public void Dispose()
        {
            foreach (var b in Bindings) b.Dispose();
            foreach (var v in _values) v.Dispose();
        }
    }
}
