using System.Runtime.Intrinsics;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// A one-row decode step computed by the library itself instead of an ONNX Runtime session: the embedding, each layer's
/// norms and matrix-vector products (<see cref="RowKernels"/>) and attention (<see cref="CachedAttention"/>, over the
/// decoder's cache in whatever element type it stores, read in place), and the head. The weights are the package's own
/// bytes in memory (<see cref="PackageWeights"/>, which the sessions share too; nothing is copied), named as in
/// models/README.md ("Graph structure"). Why: a one-row step is a chain of small products whose weights stay in the CPU's
/// cache from one step to the next, so what a session spends around them (a hand-over to its thread pool at each of ~70
/// ops, or 9 session runs for the segments) is most of the step; here the work is a list of items fixed per model
/// (column blocks of each product, the heads of each attention) that the step threads claim one at a time
/// (<see cref="WorkerTeam"/>). An item starts once every item of the stages before its own is done, so a thread that
/// wakes late joins wherever the step is and the caller never waits for it to start. Figures: benchmarks/README.md.
/// Owned by <see cref="KvCacheDecoder"/>; not thread-safe.
/// </summary>
internal sealed unsafe class OneRowStep : IDisposable
{
    private enum Kind : byte { Qkv, Attention, Projection, Up, Down, Head }

    /// <param name="From">First column (or head) of the item's block.</param>
    /// <param name="To">End of the block.</param>
    /// <param name="StageStart">Items before this index must be done before this one starts (its stage's first item).</param>
    private readonly record struct Item(Kind Kind, int Layer, int From, int To, int StageStart);

    private readonly struct Layer(float* ln1, float* attnW, float* attnB, float* projW, float* projB, float* ln2, float* upW, float* upB,
        float* downW, float* downB)
    {
        public readonly float* Ln1 = ln1, AttnW = attnW, AttnB = attnB, ProjW = projW, ProjB = projB, Ln2 = ln2, UpW = upW, UpB = upB,
            DownW = downW, DownB = downB;
    }

    private readonly Layer[] _layers;
    private readonly float* _wte, _wpe, _lnF, _headW, _headB;
    private readonly int _embd, _inner, _vocab, _heads, _normStride;
    private readonly float _eps;
    private readonly Item[] _items;
    private readonly CachedAttention _attention;
    private readonly DecoderBuffers _buffers;
    private readonly WorkerTeam? _team;
    private readonly NativeBuffer<float> _x, _qkv, _attn, _up, _normed;  // [C], [3C], [C], [inner], [threads, C]
    private readonly Action<int, int> _work;
    private readonly int[] _position = new int[1];
    private int _done;
    private bool _disposed;

    private OneRowStep(ModelManifest manifest, DecoderBuffers buffers, WorkerTeam? team, Layer[] layers,
        float* wte, float* wpe, float* lnF, float* headW, float* headB, int inner)
    {
        var a = manifest.Architecture;
        (_embd, _inner, _vocab, _heads, _eps) = (a.NEmbd, inner, manifest.VocabSize, a.NHead, (float)a.NormEps);
        _layers = layers;
        _wte = wte;
        _wpe = wpe;
        _lnF = lnF;
        _headW = headW;
        _headB = headB;
        _buffers = buffers;
        _team = team;
        int threads = team?.Threads ?? 1;
        _normStride = (_embd + 15) / 16 * 16;
        _attention = new CachedAttention(a.NHead, a.HeadSize, a.NPositions, maxBatch: 1, threads, vectorized: true, buffers.Element);
        _x = new NativeBuffer<float>(_embd);
        _qkv = new NativeBuffer<float>(3L * _embd);
        _attn = new NativeBuffer<float>(_embd);
        _up = new NativeBuffer<float>(inner);
        _normed = new NativeBuffer<float>((long)threads * _normStride);
        _items = PlanItems(layers.Length, _embd, inner, _vocab, _heads, threads);
        _work = Work;
    }

    /// <summary>
    /// The step for a package whose decoder's fp32 weights are in <paramref name="tensors"/> (by initializer name), or null
    /// with the reason when one is missing or not the shape the architecture says (the decoder then runs its other paths).
    /// </summary>
    public static OneRowStep? Create(ModelManifest manifest, DecoderBuffers buffers, WorkerTeam? team,
        IReadOnlyDictionary<string, (IntPtr Address, long[] Dims)> tensors, out string? reason)
    {
        var a = manifest.Architecture;
        int c = a.NEmbd, v = manifest.VocabSize;
        string? missing = null;
        float* Get(string name, params long[] dims)
        {
            if (missing is not null) return null;
            if (!tensors.TryGetValue(name, out var t)) missing = $"'{name}' is not in the package's weights";
            else if (!t.Dims.AsSpan().SequenceEqual(dims)) missing = $"'{name}' is [{string.Join(", ", t.Dims)}], not [{string.Join(", ", dims)}]";
            return missing is null ? (float*)t.Address : null;
        }
        reason = null;
        if (a.Activation != "quick_gelu") { reason = $"activation '{a.Activation}' (the kernels compute quick_gelu)"; return null; }
        if (!CachedAttention.CanVectorize(a.HeadSize)) { reason = "the attention kernels need AVX-512 and a head size that is a multiple of 16"; return null; }
        int inner = tensors.TryGetValue("transformer.h.0.mlp.c_fc.bias", out var fcBias) && fcBias.Dims.Length == 1 ? (int)fcBias.Dims[0] : 4 * c;
        var layers = new Layer[a.NLayer];
        for (int i = 0; i < a.NLayer; i++)
        {
            string h = $"transformer.h.{i}.";
            layers[i] = new Layer(Get(h + "ln_1.weight", c), Get(h + "attn.c_attn.weight", c, 3 * c), Get(h + "attn.c_attn.bias", 3 * c),
                Get(h + "attn.c_proj.weight", c, c), Get(h + "attn.c_proj.bias", c), Get(h + "ln_2.weight", c),
                Get(h + "mlp.c_fc.weight", c, inner), Get(h + "mlp.c_fc.bias", inner), Get(h + "mlp.c_proj.weight", inner, c), Get(h + "mlp.c_proj.bias", c));
        }
        float* wte = Get("transformer.wte.weight", v, c), wpe = Get("transformer.wpe.weight", a.NPositions, c), lnF = Get("transformer.ln_f.weight", c);
        float* headW = Get("lm_head.weight_padded", c, v), headB = Get("lm_head.sos_mask", v);
        if (missing is not null)
        {
            reason = missing;
            return null;
        }
        return new OneRowStep(manifest, buffers, team, layers, wte, wpe, lnF, headW, headB, inner);
    }

    /// <summary>Whether this CPU runs the kernels (Vector512 in hardware).</summary>
    public static bool Supported => Vector512.IsHardwareAccelerated;

    /// <summary>
    /// Every layer's stages in order: the q, k, v product, attention, the output projection, the MLP's two products; then the
    /// head. A product's columns are cut into blocks of 128 (64 where that leaves fewer than two blocks a thread), a layer's
    /// attention into heads.
    /// </summary>
    private static Item[] PlanItems(int layers, int embd, int inner, int vocab, int heads, int threads)
    {
        var items = new List<Item>();
        void Stage(Kind kind, int layer, int n, int block)
        {
            int start = items.Count;
            for (int from = 0; from < n; from += block) items.Add(new Item(kind, layer, from, Math.Min(n, from + block), start));
        }
        int Block(int n) => n / 128 >= 2 * threads ? 128 : 64;
        for (int l = 0; l < layers; l++)
        {
            Stage(Kind.Qkv, l, 3 * embd, Block(3 * embd));
            Stage(Kind.Attention, l, heads, 1);
            Stage(Kind.Projection, l, embd, Block(embd));
            Stage(Kind.Up, l, inner, Block(inner));
            Stage(Kind.Down, l, embd, Block(embd));
        }
        Stage(Kind.Head, 0, vocab, Block(vocab));
        return [.. items];
    }

    /// <summary>
    /// Row 0 (slot 0) takes <paramref name="token"/> at <paramref name="position"/> (its cache holds exactly that many
    /// entries): its keys and values are stored at the position, and its logits land in the decoder's logits buffer.
    /// Returns the cached positions its attention read per layer and head.
    /// </summary>
    public long Run(int token, int position)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _position[0] = position;
        for (int lane = 0; lane < _attention.Lanes; lane++) _attention.Plan(lane, 0, 1, _position, default, default);
        float* e = _wte + (long)token * _embd, p = _wpe + (long)position * _embd, x = _x.Pointer;
        for (int i = 0; i < _embd; i++) x[i] = e[i] + p[i];
        Volatile.Write(ref _done, 0);
        if (_team is null)
            for (int i = 0; i < _items.Length; i++) _work(i, 0);
        else _team.Run(_items.Length, _work);
        return position + 1;
    }

    private void Work(int index, int worker)
    {
        var item = _items[index];
        if (Volatile.Read(ref _done) < item.StageStart)
        {
            var spin = new SpinWait();
            while (Volatile.Read(ref _done) < item.StageStart) spin.SpinOnce(sleep1Threshold: -1);
        }
        try { Execute(item, worker); }
        finally { Interlocked.Increment(ref _done); }  // a failed item still ends its stage: the team rethrows its exception
    }

    private void Execute(Item item, int worker)
    {
        int c = _embd;
        float* x = _x.Pointer, normed = _normed.Pointer + (long)worker * _normStride;
        if (item.Kind == Kind.Head)
        {
            RowKernels.RmsNorm(x, _lnF, c, _eps, normed);
            RowKernels.Multiply(normed, _headW, c, _vocab, item.From, item.To, _headB, _buffers.Logits, RowOutput.Store);
            return;
        }
        ref readonly var l = ref _layers[item.Layer];
        switch (item.Kind)
        {
            case Kind.Qkv:
                RowKernels.RmsNorm(x, l.Ln1, c, _eps, normed);
                RowKernels.Multiply(normed, l.AttnW, c, 3 * c, item.From, item.To, l.AttnB, _qkv.Pointer, RowOutput.Store);
                break;
            case Kind.Attention:
                var kv = _buffers.Kv;
                _attention.RunHead(worker, item.From, _qkv.Pointer, (void*)kv[2 * item.Layer], (void*)kv[2 * item.Layer + 1], _attn.Pointer);
                break;
            case Kind.Projection:
                RowKernels.Multiply(_attn.Pointer, l.ProjW, c, c, item.From, item.To, l.ProjB, x, RowOutput.Add);
                break;
            case Kind.Up:
                RowKernels.RmsNorm(x, l.Ln2, c, _eps, normed);
                RowKernels.Multiply(normed, l.UpW, c, _inner, item.From, item.To, l.UpB, _up.Pointer, RowOutput.QuickGelu);
                break;
            case Kind.Down:
                RowKernels.Multiply(_up.Pointer, l.DownW, _inner, c, item.From, item.To, l.DownB, x, RowOutput.Add);
                break;
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _attention.Dispose();
        _x.Dispose();
        _qkv.Dispose();
        _attn.Dispose();
        _up.Dispose();
        _normed.Dispose();
    }
}
