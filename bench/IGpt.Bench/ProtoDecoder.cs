using System.Diagnostics;
using System.Runtime.InteropServices;
using IGpt.Inference;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Bench;

/// <summary>
/// A prototype of KvCacheDecoder's decode step, to measure changes before they go into the library:
/// the same shared-buffer IoBinding scheme (one KV buffer per layer and kind, [B, H, n_positions, D],
/// bound as past and present), plus switches: the attention mask as wide as the longest row
/// (TightMask; the library binds it n_positions wide), ORT's thread spinning, intra-op threads.
/// Greedy; rows are one prompt replicated (like IGptModel's CPU prefill).
/// </summary>
internal sealed unsafe class ProtoDecoder : IDisposable
{
    /// <param name="Kv16">the graph keeps an fp16 KV cache (bench/make_kv16.py's decoder); 2-byte elements</param>
    /// <param name="ClearKv">zero the KV buffers at allocation (the library does; it makes all MaxBatch rows resident)</param>
    /// <param name="SpinStop">with AllowSpinning: ORT's session.force_spinning_stop, threads spin inside a Run only</param>
    public sealed record Options(bool TightMask, bool AllowSpinning, int Threads, bool Kv16 = false, bool ClearKv = true, bool SpinStop = false);

    private readonly InferenceSession _session;
    private readonly ModelManifest _m;
    private readonly int _layers, _heads, _d, _n, _v, _rows;
    private readonly nint[] _kv;
    private readonly long* _ids, _pos, _mask;
    private readonly float* _logits;
    private readonly Options _o;

    public ProtoDecoder(ModelManifest manifest, int rows, Options o)
    {
        _m = manifest;
        _o = o;
        var a = manifest.Architecture;
        (_layers, _heads, _d, _n, _v, _rows) = (a.NLayer, a.NHead, a.HeadSize, a.NPositions, manifest.VocabSize, rows);
        using var so = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            IntraOpNumThreads = o.Threads > 0 ? o.Threads : Environment.ProcessorCount,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        so.AddSessionConfigEntry("session.intra_op.allow_spinning", o.AllowSpinning ? "1" : "0");
        if (o.SpinStop) so.AddSessionConfigEntry("session.force_spinning_stop", "1");
        _session = new InferenceSession(manifest.ResolvePath(manifest.Files.Decoder.Cpu.Path), so);
        _kv = new nint[2 * _layers];
        for (int i = 0; i < _kv.Length; i++)
        {
            var p = NativeMemory.AlignedAlloc((nuint)RowBytes * (nuint)rows, 64);
            if (o.ClearKv) NativeMemory.Clear(p, (nuint)RowBytes * (nuint)rows);
            _kv[i] = (nint)p;
        }
        _ids = (long*)NativeMemory.AlignedAlloc((nuint)(8L * rows * _n), 64);
        _pos = (long*)NativeMemory.AlignedAlloc((nuint)(8L * rows * _n), 64);
        _mask = (long*)NativeMemory.AlignedAlloc((nuint)(8L * rows * _n), 64);
        _logits = (float*)NativeMemory.AlignedAlloc((nuint)(4L * rows * _n * _v), 64);
    }

    private int Elem => _o.Kv16 ? 2 : 4;
    private long RowBytes => (long)Elem * _heads * _n * _d;

    /// <summary>Greedy completion of [SOS, prompt]: (tokens of row 0, prefill ms, decode ms, steps).</summary>
    public (int[] Tokens, double PrefillMs, double DecodeMs, int Steps) Complete(int[] prompt)
    {
        int total = _m.TokensPerImage, k = prompt.Length;
        var clock = Stopwatch.StartNew();
        // prefill row 0: [SOS, prompt] at 0..k
        int s = k + 1;
        for (int i = 0; i < s; i++) (_ids[i], _pos[i], _mask[i]) = (i == 0 ? _m.SosTokenId : prompt[i - 1], i, 1);
        Run(1, s, s, prefill: true);
        var tokens = new int[total - k];
        tokens[0] = ArgMax(_logits + (long)(s - 1) * _v);
        for (int r = 1; r < _rows; r++)
            foreach (var kv in _kv)
                for (int h = 0; h < _heads; h++)
                {
                    long off = ((long)h * _n) * _d * Elem;
                    Buffer.MemoryCopy((byte*)kv + off, (byte*)kv + r * RowBytes + off, (long)s * _d * Elem, (long)s * _d * Elem);
                }
        double prefillMs = clock.Elapsed.TotalMilliseconds;
        clock.Restart();
        // full-width mask rows: ones up to the length, then zeros
        if (!_o.TightMask)
            for (int r = 0; r < _rows; r++)
                for (int i = 0; i < _n; i++) _mask[(long)r * _n + i] = i < s ? 1 : 0;
        int steps = 0;
        for (int t = k + 1; t < total; t++, steps++)
        {
            int len = t + 1;  // rows hold t entries; this step adds one
            for (int r = 0; r < _rows; r++)
            {
                _ids[r] = tokens[t - 1 - k];
                _pos[r] = t;
                if (!_o.TightMask) _mask[(long)r * _n + t] = 1;
            }
            if (_o.TightMask)
                new Span<long>(_mask, _rows * len).Fill(1);
            Run(_rows, 1, _o.TightMask ? len : _n, prefill: false);
            tokens[t - k] = ArgMax(_logits);
            for (int r = 1; r < _rows; r++)
                if (ArgMax(_logits + (long)r * _v) != tokens[t - k]) throw new InvalidOperationException("rows disagree");
        }
        return (tokens, prefillMs, clock.Elapsed.TotalMilliseconds, steps);
    }

    private int ArgMax(float* row) => Sampler.ArgMax(new ReadOnlySpan<float>(row, _m.PaletteSize));

    private void Run(int rows, int s, int maskWidth, bool prefill)
    {
        var info = OrtMemoryInfo.DefaultInstance;
        using var ids = OrtValue.CreateTensorValueWithData(info, TensorElementType.Int64, [rows, s], (nint)_ids, 8L * rows * s);
        using var pos = OrtValue.CreateTensorValueWithData(info, TensorElementType.Int64, [rows, s], (nint)_pos, 8L * rows * s);
        using var mask = OrtValue.CreateTensorValueWithData(info, TensorElementType.Int64, [rows, prefill ? s : maskWidth], (nint)_mask, 8L * rows * (prefill ? s : maskWidth));
        using var logits = OrtValue.CreateTensorValueWithData(info, TensorElementType.Float, [rows, s, _v], (nint)_logits, 4L * rows * s * _v);
        using var binding = _session.CreateIoBinding();
        binding.BindInput("input_ids", ids);
        binding.BindInput("position_ids", pos);
        binding.BindInput("attention_mask", mask);
        binding.BindOutput("logits", logits);
        var views = new OrtValue[_kv.Length];
        try
        {
            for (int i = 0; i < _kv.Length; i++)
            {
                views[i] = OrtValue.CreateTensorValueWithData(info, _o.Kv16 ? TensorElementType.Float16 : TensorElementType.Float,
                    [rows, _heads, _n, _d], _kv[i], rows * RowBytes);
                binding.BindInput(i % 2 == 0 ? $"past_key_values.{i / 2}.key" : $"past_key_values.{i / 2}.value", views[i]);
                binding.BindOutput(i % 2 == 0 ? $"present.{i / 2}.key" : $"present.{i / 2}.value", views[i]);
            }
            using var ro = new RunOptions();
            _session.RunWithBinding(ro, binding);
        }
        finally
        {
            foreach (var v in views) v?.Dispose();
        }
    }

    public void Dispose()
    {
        _session.Dispose();
        foreach (var p in _kv) NativeMemory.AlignedFree((void*)p);
        NativeMemory.AlignedFree(_ids);
        NativeMemory.AlignedFree(_pos);
        NativeMemory.AlignedFree(_mask);
        NativeMemory.AlignedFree(_logits);
    }
}
