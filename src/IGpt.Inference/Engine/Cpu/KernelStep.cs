using System.Runtime.Intrinsics;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// A decode step of a few rows computed by the library itself instead of ONNX Runtime sessions: the embeddings, each
/// layer's norms and products (<see cref="RowKernels"/>) and attention (<see cref="CachedAttention"/>, over the decoder's
/// cache in whatever element type it stores, a request's shared prompt read once per (group, head)), and the head. The
/// products' weights are copied once into panels (<see cref="PanelWeights"/>: each block of 64 columns one contiguous run; as
/// int16 by default, Inference:KernelWeightType, each stage's input rows then quantized once per worker);
/// the rest (embeddings, norms, biases) is read where the package's bytes are in memory (<see cref="PackageWeights"/>, which
/// the sessions share), named as models/README.md says ("Graph structure").
/// Why: at these batch sizes a step is a chain of small products whose weights stay in the CPU's cache from one step to
/// the next, so what a session spends around them (a hand-over to its thread pool at each of ~70 ops, or 9 session runs
/// per lane for the segments, each lane reading every weight) is most of the step. Here the step is a list of items
/// (column blocks of each product for all the rows, (group, head) items of each attention, two heads an item for the
/// one-pass int8 kernels) that the step threads claim
/// one at a time (<see cref="WorkerTeam"/>); an item starts once every item of the stages before its own is done, so a
/// thread that wakes late joins wherever the step is and the caller never waits for it to start. Each column and head
/// is computed the same whichever thread takes it, so the results do not depend on the thread count. Two other ways to
/// run a step, chosen by its row count (<see cref="CpuStepPlan"/>): on the calling thread alone (small steps, where the
/// hand-overs between stages cost more than they share), or as row lanes, each thread taking a share of the rows through
/// the whole step with no hand-over until it ends (small models, which every thread can read all of); a row's products
/// do not depend on the rows beside it, so lanes give the same results, but for int8 rows of a request that a lane holds
/// alone (their prompt's last block read as one block, not two).
/// Figures: benchmarks/README.md ("Kernel steps"). Owned by <see cref="KvCacheDecoder"/>; not thread-safe.
/// </summary>
internal sealed unsafe class KernelStep : IDisposable
{
    private enum Kind : byte { Qkv, Attention, Projection, Up, Down, Head }

    /// <param name="From">First column (or attention item) of the item's block.</param>
    /// <param name="To">End of the block.</param>
    /// <param name="StageStart">Items before this index must be done before this one starts (its stage's first item).</param>
    private readonly record struct Item(Kind Kind, int Layer, int From, int To, int StageStart);

    private readonly struct Layer(float* ln1, PanelWeight attnW, float* attnB, PanelWeight projW, float* projB, float* ln2, PanelWeight upW,
        float* upB, PanelWeight downW, float* downB)
    {
        public readonly float* Ln1 = ln1, AttnB = attnB, ProjB = projB, Ln2 = ln2, UpB = upB, DownB = downB;
        public readonly PanelWeight AttnW = attnW, ProjW = projW, UpW = upW, DownW = downW;
    }

    private readonly Layer[] _layers;
    private readonly float* _wte, _wpe, _lnF, _headB;
    private readonly PanelWeight _headW;
    private readonly PanelWeights _panels;   // every product's weight, copied into panels (the package's own bytes stay for the sessions)
    private readonly int _embd, _inner, _vocab, _heads, _maxRows, _threads, _normStride, _aloneRows, _laneRows;
    private readonly float _eps;
    private readonly Item[] _items;   // this step's items, _count of them
    private readonly Item[] _laneItems;   // the stages of a row lane's step, in order
    private int _count, _rows;
    private readonly CachedAttention _attention;
    private readonly DecoderBuffers _buffers;
    private readonly WorkerTeam? _team;
    private readonly NativeBuffer<float> _x, _qkv, _attn, _up, _normed;  // [rows, C], [rows, 3C], [rows, C], [rows, inner], [threads, rows, C]
    private readonly long[] _normedFor;   // by worker: the stage (step << 16 | first item) whose norm its _normed rows hold
    private readonly int _quantizedStride;   // ints a row of _quantized takes: the widest product input's pairs
    private readonly NativeBuffer<int>? _quantized;   // with int16 panels: [threads, rows, _quantizedStride] a stage's input rows as int16 pairs
    private readonly NativeBuffer<float>? _rowScales;   // [threads, rows] their scales
    private readonly long[] _quantizedFor;   // by worker: the stage whose input its _quantized rows hold
    private readonly int[] _attentionOrder, _groupOrder;   // attention items, longest group first; the groups so ordered
    private readonly long[] _groupKeys;                    // sort keys: minus each group's positions read
    private readonly Action<int, int> _work, _laneWork;
    private readonly LaneBalancer _balancer;   // a lane step's rows: which each lane takes (Start), and each step row's slot (Order)
    private readonly int[] _stepPositions;     // a balanced lane step's positions by step row
    private readonly NativeBuffer<float> _laneLogits;  // [rows, vocab] a balanced lane step's logits by step row, before they go to their slots
    private bool _balanced;                    // this step runs as balanced lanes: step row i is slot _balancer.Order[i]
    private long _step;
    private int _done;
    private bool _disposed;

    /// <summary>
    /// The step for steps of up to <paramref name="maxRows"/> rows over <paramref name="buffers"/>, reading the decoder's fp32
    /// weights from <paramref name="tensors"/> (by initializer name; <see cref="Check"/> them first: this throws
    /// <see cref="ModelPackageException"/> where that would give a reason). Steps of at most <paramref name="aloneRows"/> rows
    /// run on the calling thread alone; steps of at least <paramref name="laneRows"/> rows (0 = never) as row lanes, each
    /// step thread running its share of the rows through the whole step. <paramref name="int16Weights"/>: the layers'
    /// products on int16 panels (<see cref="RowKernels.MultiplyQuantized"/>), the head's in fp32.
    /// </summary>
    public KernelStep(ModelManifest manifest, DecoderBuffers buffers, WorkerTeam? team, int maxRows,
        IReadOnlyDictionary<string, (IntPtr Address, long[] Dims)> tensors, int aloneRows = 0, int laneRows = 0, bool int16Weights = false)
    {
        if (Check(manifest, tensors) is { } unfit) throw new ModelPackageException(unfit);
        var a = manifest.Architecture;
        int c = a.NEmbd, v = manifest.VocabSize, inner = Inner(manifest, tensors);
        float* Get(string name) => (float*)tensors[name].Address;
        // The products' weights in panels, in this order: each layer's c_attn, c_proj, c_fc and mlp.c_proj, then the head.
        var weights = new List<(IntPtr, int, int, bool)>();
        void Product(string name, bool int16) => weights.Add((tensors[name].Address, (int)tensors[name].Dims[0], (int)tensors[name].Dims[1], int16));
        for (int i = 0; i < a.NLayer; i++)
            foreach (var name in new[] { "attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight" })
                Product($"transformer.h.{i}.{name}", int16Weights);
        Product("lm_head.weight_padded", int16: false);   // the logits' own product stays fp32
        _panels = new PanelWeights(weights);
        _layers = new Layer[a.NLayer];
        for (int i = 0; i < a.NLayer; i++)
        {
            string h = $"transformer.h.{i}.";
            _layers[i] = new Layer(Get(h + "ln_1.weight"), _panels[4 * i], Get(h + "attn.c_attn.bias"), _panels[4 * i + 1], Get(h + "attn.c_proj.bias"),
                Get(h + "ln_2.weight"), _panels[4 * i + 2], Get(h + "mlp.c_fc.bias"), _panels[4 * i + 3], Get(h + "mlp.c_proj.bias"));
        }
        _wte = Get("transformer.wte.weight");
        _wpe = Get("transformer.wpe.weight");
        _lnF = Get("transformer.ln_f.weight");
        _headW = _panels[4 * a.NLayer];
        _headB = Get("lm_head.sos_mask");
        (_embd, _inner, _vocab, _heads, _eps, _maxRows) = (c, inner, v, a.NHead, (float)a.NormEps, maxRows);
        _buffers = buffers;
        _team = team;
        (_aloneRows, _laneRows) = (aloneRows, laneRows);
        _threads = team?.Threads ?? 1;
        _normStride = (_embd + 15) / 16 * 16;
        _attention = new CachedAttention(a.NHead, a.HeadSize, a.NPositions, maxRows, _threads, vectorized: true, buffers.Element);
        _x = new NativeBuffer<float>((long)maxRows * _embd);
        _qkv = new NativeBuffer<float>(3L * maxRows * _embd);
        _attn = new NativeBuffer<float>((long)maxRows * _embd);
        _up = new NativeBuffer<float>((long)maxRows * inner);
        _normed = new NativeBuffer<float>((long)_threads * maxRows * _normStride);
        _normedFor = new long[_threads];
        _quantizedFor = new long[_threads];
        _quantizedStride = ((Math.Max(c, inner) + 1) / 2 + 15) / 16 * 16;
        if (int16Weights)
        {
            _quantized = new NativeBuffer<int>((long)_threads * maxRows * _quantizedStride);
            _rowScales = new NativeBuffer<float>((long)_threads * maxRows);
        }
        _attentionOrder = new int[maxRows * _heads];
        _groupOrder = new int[maxRows];
        _groupKeys = new long[maxRows];
        // The most items a step can have: every product in blocks of 64 columns, attention in maxRows groups of every head.
        int products = Blocks(3 * _embd, 64) + 2 * Blocks(_embd, 64) + Blocks(inner, 64);
        _items = new Item[a.NLayer * (products + maxRows * _heads) + Blocks(_vocab, 64)];
        _work = Work;
        _laneWork = RunLane;
        _balancer = new LaneBalancer(maxRows, _threads);
        _stepPositions = new int[maxRows];
        _laneLogits = new NativeBuffer<float>((long)maxRows * v);
        // A lane's stages: each product over all its columns, attention over the lane's whole plan; each stage its own
        // StageStart, for the norms' cache.
        var laneItems = new List<Item>();
        for (int l = 0; l < a.NLayer; l++)
            foreach (var (kind, n) in new[] { (Kind.Qkv, 3 * c), (Kind.Attention, int.MaxValue), (Kind.Projection, c), (Kind.Up, inner), (Kind.Down, c) })
                laneItems.Add(new Item(kind, l, 0, n, laneItems.Count));
        laneItems.Add(new Item(Kind.Head, 0, 0, v, laneItems.Count));
        _laneItems = [.. laneItems];
    }

    /// <summary>
    /// Why the kernels cannot run a package whose decoder's fp32 weights are <paramref name="tensors"/> (by initializer name),
    /// or null when they can: this CPU, the activation, and every tensor models/README.md names, in the shape the
    /// architecture gives it.
    /// </summary>
    public static string? Check(ModelManifest manifest, IReadOnlyDictionary<string, (IntPtr Address, long[] Dims)> tensors)
    {
        var a = manifest.Architecture;
        if (!Supported || !CachedAttention.CanVectorize(a.HeadSize)) return "the kernels need AVX-512 and a head size that is a multiple of 16";
        if (a.Activation != "quick_gelu") return $"activation '{a.Activation}' (the kernels compute quick_gelu)";
        int c = a.NEmbd, v = manifest.VocabSize, inner = Inner(manifest, tensors);
        var expected = new List<(string Name, long[] Dims)>();
        for (int i = 0; i < a.NLayer; i++)
        {
            string h = $"transformer.h.{i}.";
            expected.AddRange([(h + "ln_1.weight", [c]), (h + "attn.c_attn.weight", [c, 3 * c]), (h + "attn.c_attn.bias", [3 * c]),
                (h + "attn.c_proj.weight", [c, c]), (h + "attn.c_proj.bias", [c]), (h + "ln_2.weight", [c]), (h + "mlp.c_fc.weight", [c, inner]),
                (h + "mlp.c_fc.bias", [inner]), (h + "mlp.c_proj.weight", [inner, c]), (h + "mlp.c_proj.bias", [c])]);
        }
        expected.AddRange([("transformer.wte.weight", [v, c]), ("transformer.wpe.weight", [a.NPositions, c]), ("transformer.ln_f.weight", [c]),
            ("lm_head.weight_padded", [c, v]), ("lm_head.sos_mask", [v])]);
        foreach (var (name, dims) in expected)
        {
            if (!tensors.TryGetValue(name, out var t)) return $"'{name}' is not in the package's weights";
            if (!t.Dims.AsSpan().SequenceEqual(dims)) return $"'{name}' is [{string.Join(", ", t.Dims)}], not [{string.Join(", ", dims)}]";
        }
        return null;
    }

    /// <summary>The MLP's width: c_fc's bias length (4 x n_embd in every package so far).</summary>
    private static int Inner(ModelManifest manifest, IReadOnlyDictionary<string, (IntPtr Address, long[] Dims)> tensors) =>
        tensors.TryGetValue("transformer.h.0.mlp.c_fc.bias", out var b) && b.Dims.Length == 1 ? (int)b.Dims[0] : 4 * manifest.Architecture.NEmbd;

    /// <summary>Whether this CPU runs the kernels (Vector512 in hardware).</summary>
    public static bool Supported => Vector512.IsHardwareAccelerated;

    private static int Blocks(int n, int block) => (n + block - 1) / block;

    /// <summary>
    /// This step's items: every layer's stages in order (the q, k, v product, attention, the output projection, the MLP's two
    /// products), then the head. A product's columns are cut into blocks of 64 for all the rows (128 for one row where that
    /// still leaves two blocks a thread); attention into runs of its (group, head) items (<see cref="CachedAttention.ItemsPerGroup"/>).
    /// </summary>
    private void PlanItems(int rows, int attentionItems)
    {
        int count = 0;
        void Stage(Kind kind, int layer, int n, int block)
        {
            int start = count;
            for (int from = 0; from < n; from += block) _items[count++] = new Item(kind, layer, from, Math.Min(n, from + block), start);
        }
        int Block(int n) => rows == 1 && n / 128 >= 2 * _threads ? 128 : 64;
        // Attention: the (group, head) items longest group first (OrderAttention), claimed in runs that shrink as the stage
        // nears its end: up to a quarter of a thread's share at first (16 independent rows of 8 heads were 128 items a layer, a head each,
        // and claiming each on its own cost more than the imbalance of claiming them in eights), then shorter runs of the
        // shorter items, so that the threads reach the stage's end together.
        int largest = Math.Max(1, attentionItems / (4 * _threads));
        void AttentionStage(int layer)
        {
            int start = count;
            for (int from = 0; from < attentionItems;)
            {
                int size = Math.Clamp((attentionItems - from) / (2 * _threads), 1, largest);
                _items[count++] = new Item(Kind.Attention, layer, from, from + size, start);
                from += size;
            }
        }
        for (int l = 0; l < _layers.Length; l++)
        {
            Stage(Kind.Qkv, l, 3 * _embd, Block(3 * _embd));
            AttentionStage(l);
            Stage(Kind.Projection, l, _embd, Block(_embd));
            Stage(Kind.Up, l, _inner, Block(_inner));
            Stage(Kind.Down, l, _embd, Block(_embd));
        }
        Stage(Kind.Head, 0, _vocab, Block(_vocab));
        _count = count;
    }

    /// <summary>
    /// One step over slots 0..rows-1: slot r takes tokens[r] at positions[r] (its cache holds exactly that many entries), its
    /// keys and values are stored there, and its logits land in the decoder's logits buffer. <paramref name="groups"/> and
    /// <paramref name="sharedLengths"/> as <see cref="KvCacheDecoder.Step"/> takes them (checked by the caller). Returns the
    /// cached positions the step's attention read per layer and head (a group's shared entries once).
    /// </summary>
    public long Run(int rows, ReadOnlySpan<int> tokens, ReadOnlySpan<int> positions, ReadOnlySpan<int> groups, ReadOnlySpan<int> sharedLengths)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (rows < 1 || rows > _maxRows) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"kernel steps take 1..{_maxRows} rows");
        _attention.CheckGroups(rows, positions, groups, sharedLengths);
        _rows = rows;
        if (_team is not null && _laneRows > 0 && rows >= _laneRows && rows > _aloneRows)
        {
            PlanLanes(rows, positions, groups, sharedLengths);
            _attention.ChoosePrefetch(OwnPositions(), _layers.Length);
            for (int i = 0; i < _attentionOrder.Length; i++) _attentionOrder[i] = i;   // one thread a lane: no order to balance
            Embed(rows, tokens, positions);
            _step++;
            _team.Run(_threads, _laneWork);
            StepsAsLanes++;
            long read = 0;
            for (int lane = 0; lane < _threads; lane++) read += _attention.PositionsRead(lane);
            return read;
        }
        _balanced = false;
        for (int lane = 0; lane < _threads; lane++) _attention.Plan(lane, 0, rows, positions, groups, sharedLengths);
        _attention.ChoosePrefetch(_attention.OwnPositionsRead(0), _layers.Length);
        OrderAttention();
        PlanItems(rows, _attention.Items(0));
        Embed(rows, tokens, positions);
        _step++;
        Volatile.Write(ref _done, 0);
        if (_team is null || rows <= _aloneRows)
        {
            for (int i = 0; i < _count; i++) _work(i, 0);
            StepsAlone++;
        }
        else _team.Run(_count, _work);
        return _attention.PositionsRead(0);
    }

    /// <summary>
    /// Each lane's rows for a lane step. Rows alone (no group reads a shared prompt once for several of them: every row of
    /// unconditional samples, or of clients' separate requests) are balanced between the lanes by the positions they read
    /// (<see cref="LaneBalancer"/>): step row i is then slot _balancer.Order[i], each lane's step rows contiguous. Rows in
    /// groups keep the slot order, cut in halves, so that a group stays together as far as it can.
    /// </summary>
    private void PlanLanes(int rows, ReadOnlySpan<int> positions, ReadOnlySpan<int> groups, ReadOnlySpan<int> sharedLengths)
    {
        _balanced = CachedAttention.PlansEveryRowAlone(rows, groups, sharedLengths);
        if (_balanced)
        {
            _balancer.Balance(positions[..rows]);
            for (int i = 0; i < rows; i++) _stepPositions[i] = positions[_balancer.Order[i]];
            BalancedLaneSteps++;
        }
        else _balancer.Halves(rows);
        for (int lane = 0; lane < _threads; lane++)
        {
            int first = _balancer.Start[lane], count = _balancer.Start[lane + 1] - first;
            if (_balanced)
                _attention.Plan(lane, first, count, _stepPositions.AsSpan(0, rows), default, default, _balancer.Order.AsSpan(0, rows));
            else
                _attention.Plan(lane, first, count, positions, groups, sharedLengths);
        }
    }

    /// <summary>Of <see cref="StepsAsLanes"/>, those whose rows were balanced between the lanes (every row alone).</summary>
    public long BalancedLaneSteps { get; private set; }

    /// <summary>Steps run on the calling thread alone so far (no team, or at most the constructor's aloneRows rows).</summary>
    public long StepsAlone { get; private set; }

    /// <summary>Steps run as row lanes so far (at least the constructor's laneRows rows).</summary>
    public long StepsAsLanes { get; private set; }

    private long OwnPositions()
    {
        long own = 0;
        for (int lane = 0; lane < _threads; lane++) own += _attention.OwnPositionsRead(lane);
        return own;
    }

    private void Embed(int rows, ReadOnlySpan<int> tokens, ReadOnlySpan<int> positions)
    {
        float* x = _x.Pointer;
        for (int r = 0; r < rows; r++)
        {
            int slot = _balanced ? _balancer.Order[r] : r;
            float* e = _wte + (long)tokens[slot] * _embd, p = _wpe + (long)positions[slot] * _embd, xr = x + (long)r * _embd;
            for (int i = 0; i < _embd; i++) xr[i] = e[i] + p[i];
        }
    }

    /// <summary>
    /// Lane <paramref name="lane"/>'s rows (<see cref="LaneRunner.LaneRows"/>) through the whole step on the calling thread: every
    /// stage as one item over all its columns and the lane's attention plan, for the lane's rows only, with no hand-over
    /// between threads until the step ends.
    /// </summary>
    private void RunLane(int lane, int worker)
    {
        int first = _balancer.Start[lane], count = _balancer.Start[lane + 1] - first;
        if (count == 0) return;
        foreach (var item in _laneItems) Execute(item, lane, first, count);
        if (!_balanced) return;
        for (int i = first; i < first + count; i++)   // each step row's logits to its slot's row
            new ReadOnlySpan<float>(_laneLogits.Pointer + (long)i * _vocab, _vocab).CopyTo(
                new Span<float>(_buffers.Logits + (long)_balancer.Order[i] * _vocab, _vocab));
    }

    /// <summary>The plan's (group, head) items ordered by their group's positions read, most first (ties in group order).</summary>
    private void OrderAttention()
    {
        int perGroup = _attention.ItemsPerGroup, groups = _attention.Items(0) / perGroup;
        for (int g = 0; g < groups; g++)
        {
            _groupOrder[g] = g;
            _groupKeys[g] = -_attention.GroupPositionsRead(0, g) * 1024 - (1023 - g);   // stable: ties keep group order
        }
        Array.Sort(_groupKeys, _groupOrder, 0, groups);
        for (int k = 0; k < groups; k++)
            for (int h = 0; h < perGroup; h++) _attentionOrder[k * perGroup + h] = _groupOrder[k] * perGroup + h;
    }

    private void Work(int index, int worker)
    {
        var item = _items[index];
        if (Volatile.Read(ref _done) < item.StageStart)
        {
            var spin = new SpinWait();
            while (Volatile.Read(ref _done) < item.StageStart) spin.SpinOnce(sleep1Threshold: -1);
        }
        try { Execute(item, worker, 0, _rows); }
        finally { Interlocked.Increment(ref _done); }  // a failed item still ends its stage: the team rethrows its exception
    }

    /// <summary>
    /// One item for rows first..first+count-1 (all the step's rows, or a lane's), with <paramref name="worker"/>'s scratch and
    /// attention plan (a lane's own plan; in shared-out stages every worker holds the whole step's).
    /// </summary>
    private void Execute(Item item, int worker, int first, int count)
    {
        int c = _embd;
        float* x = _x.Pointer + (long)first * c;
        if (item.Kind == Kind.Head)
        {
            float* h = Normed(worker, item, _lnF, first, count);
            float* logits = _balanced ? _laneLogits.Pointer : _buffers.Logits;   // by step row, or by slot
            RowKernels.Multiply(h, _normStride, count, _headW, item.From, item.To, _headB, logits + (long)first * _vocab, _vocab,
                RowOutput.Store);
            return;
        }
        ref readonly var l = ref _layers[item.Layer];
        switch (item.Kind)
        {
            case Kind.Qkv:
                Multiply(worker, item, Normed(worker, item, l.Ln1, first, count), _normStride, count, l.AttnW, l.AttnB,
                    _qkv.Pointer + (long)first * 3 * c, 3 * c, RowOutput.Store);
                break;
            case Kind.Attention:
                // A lane's item runs to the end of its plan (To: int.MaxValue).
                void* keys = (void*)_buffers.Kv[2 * item.Layer], values = (void*)_buffers.Kv[2 * item.Layer + 1];
                for (int i = item.From, to = Math.Min(item.To, _attention.Items(worker)); i < to; i++)
                    _attention.RunGroupHead(worker, _attentionOrder[i], _qkv.Pointer, keys, values, _attn.Pointer);
                break;
            case Kind.Projection:
                Multiply(worker, item, _attn.Pointer + (long)first * c, c, count, l.ProjW, l.ProjB, x, c, RowOutput.Add);
                break;
            case Kind.Up:
                Multiply(worker, item, Normed(worker, item, l.Ln2, first, count), _normStride, count, l.UpW, l.UpB,
                    _up.Pointer + (long)first * _inner, _inner, RowOutput.QuickGelu);
                break;
            case Kind.Down:
                Multiply(worker, item, _up.Pointer + (long)first * _inner, _inner, count, l.DownW, l.DownB, x, c, RowOutput.Add);
                break;
        }
    }

    /// <summary>
    /// Columns item.From..item.To of a layer's product for <paramref name="count"/> rows of <paramref name="x"/>: on fp32
    /// panels, or on int16 ones (<see cref="PanelWeight.Quantized"/>) with the rows quantized once per stage by each worker
    /// that takes part in it.
    /// </summary>
    private void Multiply(int worker, Item item, float* x, int xStride, int count, in PanelWeight w, float* bias, float* y, int yStride,
        RowOutput output)
    {
        if (!w.Quantized)
        {
            RowKernels.Multiply(x, xStride, count, w, item.From, item.To, bias, y, yStride, output);
            return;
        }
        int* q = _quantized!.Pointer + (long)worker * _maxRows * _quantizedStride;
        float* scales = _rowScales!.Pointer + (long)worker * _maxRows;
        long stage = _step << 16 | (uint)item.StageStart;
        if (_quantizedFor[worker] != stage)
        {
            RowKernels.QuantizeRows(x, xStride, count, w.K, q, _quantizedStride, scales);
            _quantizedFor[worker] = stage;
        }
        RowKernels.MultiplyQuantized(x, xStride, q, _quantizedStride, scales, count, w, item.From, item.To, bias, y, yStride, output);
    }

    /// <summary>
    /// Rows first..first+count-1 of the residual stream normalized with <paramref name="gain"/> into <paramref name="worker"/>'s
    /// scratch, computed once per stage by each worker that takes part in it.
    /// </summary>
    private float* Normed(int worker, Item item, float* gain, int first, int count)
    {
        float* h = _normed.Pointer + (long)worker * _maxRows * _normStride;
        long stage = _step << 16 | (uint)item.StageStart;
        if (_normedFor[worker] == stage) return h;
        for (int r = 0; r < count; r++) RowKernels.RmsNorm(_x.Pointer + (long)(first + r) * _embd, gain, _embd, _eps, h + (long)r * _normStride);
        _normedFor[worker] = stage;
        return h;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _attention.Dispose();
        _panels.Dispose();
        _x.Dispose();
        _qkv.Dispose();
        _attn.Dispose();
        _up.Dispose();
        _normed.Dispose();
        _quantized?.Dispose();
        _rowScales?.Dispose();
        _laneLogits.Dispose();
    }
}
