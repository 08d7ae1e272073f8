using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// A decode step's attention for one layer, over the decoder's KV cache ([MaxBatch, n_head, n_positions,
/// head_size] per layer, the layout GroupQueryAttention reads and writes), stored as fp32, fp16 or int8 entries
/// (<see cref="KvElement"/>): writes each row's new key and value at its position, then attends its query to
/// positions 0..position. An int8 cache is read by int8 dot products (<see cref="Int8Blocks"/>, its own layout): with
/// AVX-VNNI and a head size of 32 each row in one pass (<see cref="Int8Blocks.Attend"/>), a group's shared blocks from its
/// first row's slot, which stay in cache for its other rows; else in three passes (scores, softmax, weighted values), a
/// group's shared blocks once for all its rows. An fp16 group's shared entries are converted back in chunks of <see cref="Chunk"/>
/// positions into a lane's scratch (L1-sized) and the fp32 kernels run on the chunk, so they are converted once for all
/// its rows, as they are read once; a single row's fp16 entries are read in place (<see cref="CompressedKernels"/>). Used by
/// the kernel steps (<see cref="KernelStep"/>) and step segments (<see cref="SegmentedStep"/>), for two reasons:
/// <list type="bullet">
/// <item>Rows that share a prompt (the samples of one completion request) hold identical keys and values for
/// its positions: those are read once per lane instead of once per row, which is most of a step's memory
/// traffic when a batch completes one half-image (bench/attention.py measures it; figures in benchmarks/README.md).</item>
/// <item>Keys stream through AVX-512 dot products, sixteen at a time with one transposing reduction, instead
/// of ONNX Runtime's one small GEMM per (row, head).</item>
/// </list>
/// A step's rows are split into lanes, one per thread (<see cref="SegmentedStep"/>): each lane plans and runs
/// its own rows with its own buffers, so lanes run concurrently; one lane is not thread-safe.
/// </summary>
internal sealed unsafe class CachedAttention : IDisposable
{
    /// <summary>Positions of a compressed cache converted at a time (a multiple of 16: the vector kernels' block).</summary>
    private const int Chunk = 64;

    private readonly int _heads, _headSize, _positions, _embd, _maxBatch;
    /// <summary>Heads an item takes (<see cref="ItemsPerGroup"/>): 2 for the one-pass int8 kernels, which run two heads of a row in one pass.</summary>
    private readonly int _headsPerItem;
    private readonly long _headBytes;  // bytes of one (slot, head) of the cache
    private readonly KvElement _element;
    private readonly float _scale;
    private readonly bool _vectorized, _inPlace, _int8Kernels, _onePass, _vnni = Int8Blocks.HasVnni;
    private readonly Lane[] _lanes;
    private bool _disposed;

    /// <param name="lanes">Lanes (threads) a step's rows may be split into.</param>
    /// <param name="vectorized">AVX-512 kernels (needs <see cref="CanVectorize"/>); false = portable scalar loops.</param>
    /// <param name="element">What the cache's elements are stored as.</param>
    /// <param name="inPlace">
    /// With AVX-512 and a compressed cache: int8 entries are read by the int8 kernels (<see cref="Int8Blocks"/>, where the
    /// CPU has AVX-512BW), a single row's fp16 entries in place (<see cref="CompressedKernels"/>); false converts them into
    /// scratch a chunk at a time (for same-process A/Bs: bench/attention.py --in-place both).
    /// </param>
    public CachedAttention(int heads, int headSize, int positions, int maxBatch, int lanes, bool vectorized,
        KvElement element = KvElement.Float32, bool inPlace = true)
    {
        if (vectorized && !CanVectorize(headSize))
            throw new ArgumentException("AVX-512 attention needs AVX-512F and a head size that is a multiple of 16", nameof(vectorized));
        (_heads, _headSize, _positions, _maxBatch) = (heads, headSize, positions, maxBatch);
        _embd = heads * headSize;
        _scale = 1f / MathF.Sqrt(headSize);
        _vectorized = vectorized;
        (_element, _headBytes) = (element, element.HeadBytes(headSize, positions));
        // Read in place: fp16 single rows by CompressedKernels; int8 by Int8Blocks where the CPU runs them (else converted a
        // chunk at a time, as inPlace false asks).
        _inPlace = inPlace && vectorized && element == KvElement.Float16;
        _int8Kernels = inPlace && vectorized && element == KvElement.Int8 && Int8Blocks.CanRun(headSize);
        _onePass = _int8Kernels && Int8Blocks.CanAttend(headSize);
        _headsPerItem = _onePass && heads % 2 == 0 ? 2 : 1;
        _lanes = new Lane[Math.Max(1, lanes)];
        for (int i = 0; i < _lanes.Length; i++)
            _lanes[i] = new Lane(maxBatch, maxBatch * _headsPerItem, positions, headSize, element == KvElement.Float32 ? 0 : Chunk);
    }

    /// <summary>Whether this CPU runs the AVX-512 kernels for <paramref name="headSize"/>.</summary>
    public static bool CanVectorize(int headSize) =>
        Avx512F.IsSupported && Vector512.IsHardwareAccelerated && headSize % 16 == 0 && headSize > 0;

    /// <summary>
    /// Whether the int8 kernels ask for each (slot, head)'s entries four blocks ahead of where they read (prefetcht0). Set per
    /// step (<see cref="ChoosePrefetch"/>): it pays where rows stream long caches of their own from DRAM (16 independent rows
    /// of the 256- and 512-wide shapes: 1.2-1.5x in bench/attention.py) and costs up to 20% where the entries are in cache
    /// (one row, or a shared prompt every row of a group reads again).
    /// </summary>
    public bool PrefetchEntries { get; set; }

    /// <summary>Cache bytes a step's rows read on their own (all layers, keys and values; a shared prompt not counted) above which <see cref="ChoosePrefetch"/> turns <see cref="PrefetchEntries"/> on.</summary>
    public const long PrefetchAboveBytes = 16L << 20;

    /// <summary>Sets <see cref="PrefetchEntries"/> for a step of <paramref name="layers"/> layers whose plans (every lane's) read <paramref name="ownPositions"/> positions of their rows' own per layer and head.</summary>
    public void ChoosePrefetch(long ownPositions, int layers) =>
        PrefetchEntries = ownPositions * _heads * layers * 2L * _element.EntryBytes(_headSize) > PrefetchAboveBytes;

    /// <summary>
    /// Shared prompts shorter than this (one int8 block) are not worth a group: <see cref="Plan"/> plans their rows alone, which
    /// share a step's attention out between threads in smaller items (every unconditional sample shares only SOS).
    /// </summary>
    public const int GroupFromSharedLength = 16;

    /// <summary>Whether an int8 cache is read by the int8 dot-product kernels (<see cref="Int8Blocks"/>), not converted to fp32 first.</summary>
    public bool ReadsInt8InPlace => _int8Kernels;

    public int Lanes => _lanes.Length;

    /// <summary>
    /// Checks a step's row groups: rows whose groups[r] is the same row (the group's first, groups[r] &lt;= r) hold
    /// identical keys and values at positions 0..sharedLengths[r]-1. Empty spans: every row alone.
    /// </summary>
    public void CheckGroups(int rows, ReadOnlySpan<int> positions, ReadOnlySpan<int> groups, ReadOnlySpan<int> sharedLengths)
    {
        if (rows < 1 || rows > _maxBatch) throw new ArgumentOutOfRangeException(nameof(rows));
        if (positions.Length < rows) throw new ArgumentException("positions needs a value per row");
        for (int r = 0; r < rows; r++)
            if ((uint)positions[r] >= (uint)_positions) throw new ArgumentOutOfRangeException(nameof(positions), positions[r], "position past n_positions");
        if (groups.IsEmpty) return;
        if (groups.Length < rows || sharedLengths.Length < rows) throw new ArgumentException("groups and sharedLengths need a value per row");
        for (int r = 0; r < rows; r++)
        {
            int first = groups[r];
            if ((uint)first > (uint)r || groups[first] != first || sharedLengths[r] != sharedLengths[first])
                throw new ArgumentException($"row {r}: group {first} is not an earlier group's first row with the same shared length");
        }
    }

    /// <summary>
    /// Sets lane <paramref name="lane"/>'s rows for the coming step: rows firstRow..firstRow+count-1 of a step checked
    /// by <see cref="CheckGroups"/>. A group split between lanes is read once per lane. <paramref name="slots"/>: the cache
    /// slot of each step row (row r's keys and values in slot slots[r]; <paramref name="positions"/>, groups and shared
    /// lengths by step row), or empty: row r's slot is r. Allocates nothing.
    /// </summary>
    public void Plan(int lane, int firstRow, int count, ReadOnlySpan<int> positions, ReadOnlySpan<int> groups, ReadOnlySpan<int> sharedLengths,
        ReadOnlySpan<int> slots = default)
    {
        var l = _lanes[lane];
        bool grouped = !groups.IsEmpty;
        int end = firstRow + count, n = 0, g = 0;
        for (int r = firstRow; r < end; r++)
        {
            l.Position[r] = positions[r];
            l.Slot[r] = slots.IsEmpty ? r : slots[r];
        }
        for (int leader = firstRow; leader < end; leader++)
        {
            // The lane's first row of each group leads it here; a group whose shared prompt is shorter than
            // GroupFromSharedLength is planned as rows alone.
            int shared = grouped ? sharedLengths[leader] : 0;
            bool together = ReadsTogether(groups, sharedLengths, leader);
            bool leads = true;
            if (together)
                for (int before = firstRow; before < leader; before++)
                    if (groups[before] == groups[leader]) { leads = false; break; }
            if (!leads) continue;
            l.GroupStart[g] = n;
            for (int r = leader; r < end; r++)
            {
                if (r != leader && (!together || groups[r] != groups[leader])) continue;
                l.Members[n++] = r;
                shared = Math.Min(shared, positions[r]);  // a row's own key at its position is never shared
            }
            // A row alone reads every position from its own slot, in whole blocks.
            l.SharedLength[g] = n - l.GroupStart[g] == 1 ? 0 : Math.Max(0, shared);
            g++;
        }
        l.GroupStart[g] = n;
        l.Groups = g;
    }

    /// <summary>Whether <see cref="Plan"/> reads row <paramref name="row"/>'s group together (its shared prompt once), not as rows alone.</summary>
    private static bool ReadsTogether(ReadOnlySpan<int> groups, ReadOnlySpan<int> sharedLengths, int row) =>
        !groups.IsEmpty && sharedLengths[row] >= GroupFromSharedLength;

    /// <summary>Whether <see cref="Plan"/> plans every row of a step of <paramref name="rows"/> rows alone: no row reads a group's shared prompt with another.</summary>
    public static bool PlansEveryRowAlone(int rows, ReadOnlySpan<int> groups, ReadOnlySpan<int> sharedLengths)
    {
        for (int r = 0; r < rows; r++)
            if (ReadsTogether(groups, sharedLengths, r) && groups[r] != r) return false;
        return true;
    }

    /// <summary>
    /// Cached positions lane <paramref name="lane"/>'s plan reads per layer and head: each group's shared prompt once, then
    /// every row's own entries up to its new one.
    /// </summary>
    public long PositionsRead(int lane)
    {
        var l = _lanes[lane];
        long read = 0;
        for (int g = 0; g < l.Groups; g++)
        {
            int shared = l.SharedLength[g];
            read += shared;
            for (int i = l.GroupStart[g]; i < l.GroupStart[g + 1]; i++) read += l.Position[l.Members[i]] + 1 - shared;
        }
        return read;
    }

    /// <summary>
    /// One layer for lane <paramref name="lane"/>'s rows: qkv [rows, 3 x n_embd] (packed q | k | v, head-major, indexed by
    /// step row) in; each row's k and v written into the layer's cache (<paramref name="keys"/>, <paramref name="values"/>:
    /// elements of the constructor's type) at its position; attention output [rows, n_embd] (heads concatenated) out.
    /// Runs on the calling thread.
    /// </summary>
    public void Run(int lane, float* qkv, void* keys, void* values, float* output)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var l = _lanes[lane];
        for (int item = 0; item < l.Groups * ItemsPerGroup; item++) RunItem(l, item, qkv, (byte*)keys, (byte*)values, output);
    }

    /// <summary>Of <see cref="PositionsRead"/>, the positions each row reads on its own (not a group's shared prompt).</summary>
    public long OwnPositionsRead(int lane)
    {
        var l = _lanes[lane];
        long read = PositionsRead(lane);
        for (int g = 0; g < l.Groups; g++) read -= l.SharedLength[g];
        return read;
    }

    /// <summary>Cached positions group <paramref name="group"/> of lane <paramref name="lane"/>'s plan reads per head (<see cref="PositionsRead"/>'s share).</summary>
    public long GroupPositionsRead(int lane, int group)
    {
        var l = _lanes[lane];
        int shared = l.SharedLength[group];
        long read = shared;
        for (int i = l.GroupStart[group]; i < l.GroupStart[group + 1]; i++) read += l.Position[l.Members[i]] + 1 - shared;
        return read;
    }

    /// <summary>(group, head) items lane <paramref name="lane"/>'s plan has: <see cref="RunGroupHead"/> runs one.</summary>
    public int Items(int lane) => _lanes[lane].Groups * ItemsPerGroup;

    /// <summary>
    /// Items of each group (<see cref="Items"/>: group item / ItemsPerGroup): one per head, or with the one-pass int8 kernels
    /// one per two heads, which <see cref="Int8Blocks.AttendTwoHeads"/> reads in one pass.
    /// </summary>
    public int ItemsPerGroup => _heads / _headsPerItem;

    /// <summary>
    /// Item <paramref name="item"/> (group item / <see cref="ItemsPerGroup"/>, its first head item % ItemsPerGroup x the heads
    /// an item takes) of <see cref="Run"/> for lane <paramref name="lane"/>:
    /// how a step on the library's kernels (<see cref="KernelStep"/>) shares a layer's attention out between threads, each
    /// holding the same plan in its own lane (its scratch). Items touch disjoint cache entries and outputs.
    /// </summary>
    public void RunGroupHead(int lane, int item, float* qkv, void* keys, void* values, float* output)
    {
        var l = _lanes[lane];
        if ((uint)item >= (uint)(l.Groups * ItemsPerGroup)) throw new ArgumentOutOfRangeException(nameof(item));
        RunItem(l, item, qkv, (byte*)keys, (byte*)values, output);
    }

    private void RunItem(Lane l, int item, float* qkv, byte* keys, byte* values, float* output)
    {
        int g = item / ItemsPerGroup, head = item % ItemsPerGroup * _headsPerItem, heads = _headsPerItem;
        int first = l.GroupStart[g], count = l.GroupStart[g + 1] - first;
        var rows = new ReadOnlySpan<int>(l.Members, first, count);
        int d = _headSize, p = _positions;
        float* queries = l.Queries, scores = l.Scores, acc = l.Acc, sums = l.Sums;
        long stride = _headBytes;
        long pitch = p + 16;

        // New keys and values into the cache; queries scaled (GroupQueryAttention's scale, 1/sqrt(head_size)), row j's of the
        // item's head h in slot j x heads + h (for one head an item, slot j).
        for (int j = 0; j < count; j++)
            for (int h = 0; h < heads; h++)
            {
                int r = rows[j], slot = j * heads + h;
                float* q = qkv + (long)r * 3 * _embd + (head + h) * d;
                long own = ((long)l.Slot[r] * _heads + head + h) * stride;
                KvCodec.Encode(_element, KvPart.Key, q + _embd, keys + own, l.Position[r], 1, d);
                KvCodec.Encode(_element, KvPart.Value, q + 2 * _embd, values + own, l.Position[r], 1, d);
                float* scaled = queries + slot * d;
                if (_vectorized)
                    for (int i = 0; i < d; i += 16) (Vector512.Load(q + i) * _scale).Store(scaled + i);
                else
                    for (int i = 0; i < d; i++) scaled[i] = q[i] * _scale;
                if (_int8Kernels)
                    l.QueryScales[slot] = Int8Blocks.QuantizeQuery(scaled, d, l.QueryGroups + slot * (d / 4), out l.Corrections[slot],
                        bytePairs: !_vnni);   // without VNNI the kernels add byte products in 16-bit pairs
            }

        int shared = l.SharedLength[g];
        long leader = ((long)l.Slot[rows[0]] * _heads + head) * stride;
        if (_onePass)
        {
            // Each row in one pass (scores, softmax and weighted values), the group's shared positions from its first row's
            // slot: they stay in cache from one row to the next, so they are still read from memory once for the group.
            // Two heads an item: both in one pass (Int8Blocks.AttendTwoHeads), the second's entries one (slot, head) on.
            for (int j = 0; j < count; j++)
            {
                long own = ((long)l.Slot[rows[j]] * _heads + head) * stride;
                int slot = j * heads, to = l.Position[rows[j]] + 1;
                float* o = output + (long)rows[j] * _embd + head * d;
                if (heads == 2)
                {
                    Int8Blocks.AttendTwoHeads(keys + leader, values + leader, shared, keys + own, values + own, to, stride,
                        l.QueryGroups + slot * (d / 4), l.QueryScales + slot, l.Corrections + slot, acc, PrefetchEntries, _vnni, out float sumA,
                        out float sumB);
                    Normalize(acc, sumA, o, d);
                    Normalize(acc + d, sumB, o + d, d);
                    continue;
                }
                float sum = Int8Blocks.Attend(keys + leader, values + leader, shared, keys + own, values + own, to,
                    l.QueryGroups + slot * (d / 4), l.QueryScales[slot], l.Corrections[slot], acc, PrefetchEntries);
                Normalize(acc, sum, o, d);
            }
            return;
        }
        // Scores: the shared positions once for the group, then each row's own.
        Scores(l, keys + leader, 0, shared, 0, count, scores);
        for (int j = 0; j < count; j++)
        {
            long own = ((long)l.Slot[rows[j]] * _heads + head) * stride;
            Scores(l, keys + own, shared, l.Position[rows[j]] + 1, j, 1, scores + j * pitch);
        }
        // Softmax per row, left unnormalized: the output is divided by the sum.
        for (int j = 0; j < count; j++) sums[j] = Exponentiate(scores + j * pitch, l.Position[rows[j]] + 1);
        new Span<float>(acc, count * d).Clear();
        WeightedValues(l, values + leader, 0, shared, scores, count, acc);
        for (int j = 0; j < count; j++)
        {
            long own = ((long)l.Slot[rows[j]] * _heads + head) * stride;
            WeightedValues(l, values + own, shared, l.Position[rows[j]] + 1, scores + j * pitch, 1, acc + j * d);
        }
        for (int j = 0; j < count; j++)
        {
            float inverse = 1f / sums[j];
            float* o = output + (long)rows[j] * _embd + head * d;
            for (int i = 0; i < d; i++) o[i] = acc[j * d + i] * inverse;
        }
    }

    /// <summary>A head's output: its weighted values <paramref name="acc"/> over the softmax's <paramref name="sum"/>.</summary>
    private static void Normalize(float* acc, float sum, float* output, int headSize)
    {
        var inverse = Vector512.Create(1f / sum);
        for (int i = 0; i < headSize; i += 16) (Vector512.Load(acc + i) * inverse).Store(output + i);
    }

    /// <summary>
    /// <see cref="Scores(float*, int, int, float*, int, float*)"/> over a (slot, head) of the cache (<paramref name="keys"/>: its
    /// position 0) in its element type, for the lane's queries firstQuery..firstQuery+count-1: fp32 read in place, int8 by the
    /// int8 kernels, fp16 of a single row in place, anything else converted a chunk at a time into the lane's scratch.
    /// </summary>
    private void Scores(Lane l, byte* keys, int from, int to, int firstQuery, int count, float* scores)
    {
        float* queries = l.Queries + firstQuery * _headSize;
        if (_element == KvElement.Float32)
        {
            Scores((float*)keys, from, to, queries, count, scores);
            return;
        }
        long d = _headSize;
        if (_int8Kernels)
        {
            Int8Blocks.Scores(keys, from, to, l.QueryGroups + firstQuery * (_headSize / 4), l.QueryScales + firstQuery,
                l.Corrections + firstQuery, count, _headSize, scores, _positions + 16, _vnni, PrefetchEntries);
            return;
        }
        if (count == 1 && _inPlace)
        {
            float* query = l.Query;
            for (int i = 0; i < _headSize; i++) query[i] = queries[i] * CompressedKernels.HalfScale;
            from = CompressedKernels.Scores(keys, from, to, query, _headSize, scores);
        }
        for (int c0 = from; c0 < to; c0 += Chunk)
        {
            int c1 = Math.Min(to, c0 + Chunk);
            KvCodec.Decode(_element, KvPart.Key, keys, c0, c1 - c0, l.Block, _headSize);
            Scores(l.Block - c0 * d, c0, c1, queries, count, scores);  // the chunk indexed by position, as the block is
        }
    }

    /// <summary><see cref="WeightedValues(float*, int, int, float*, int, float*)"/> over values in the cache's element type (as <see cref="Scores(Lane, byte*, int, int, int, int, float*)"/>).</summary>
    private void WeightedValues(Lane l, byte* values, int from, int to, float* probabilities, int count, float* acc)
    {
        if (_element == KvElement.Float32)
        {
            WeightedValues((float*)values, from, to, probabilities, count, acc);
            return;
        }
        long d = _headSize;
        if (_int8Kernels)
        {
            Int8Blocks.WeightedValues(values, from, to, probabilities, _positions + 16, count, _headSize, acc, _vnni, PrefetchEntries);
            return;
        }
        if (count == 1 && _inPlace)
            from = CompressedKernels.WeightedValues(values, from, to, probabilities, _headSize, acc);
        for (int c0 = from; c0 < to; c0 += Chunk)
        {
            int c1 = Math.Min(to, c0 + Chunk);
            KvCodec.Decode(_element, KvPart.Value, values, c0, c1 - c0, l.Block, _headSize);
            WeightedValues(l.Block - c0 * d, c0, c1, probabilities, count, acc);
        }
    }

    /// <summary>scores[j][t] = q_j . k_t for t in [from, to), for <paramref name="count"/> queries (score rows n_positions+16 apart).</summary>
    private void Scores(float* keys, int from, int to, float* queries, int count, float* scores)
    {
        int d = _headSize;
        long pitch = _positions + 16;
        int t = from;
        if (_vectorized)
        {
            for (; t + 16 <= to; t += 16)
                for (int j = 0; j < count; j++)
                    Dot16(keys + (long)t * d, queries + j * d, d).Store(scores + j * pitch + t);
        }
        for (; t < to; t++)
            for (int j = 0; j < count; j++)
            {
                float* k = keys + (long)t * d, q = queries + j * d;
                float s = 0;
                for (int i = 0; i < d; i++) s += k[i] * q[i];
                scores[j * pitch + t] = s;
            }
    }

    /// <summary>scores[t] = exp(scores[t] - max) for t in [0, n); returns their sum.</summary>
    private float Exponentiate(float* scores, int n)
    {
        float max = float.NegativeInfinity;
        int t = 0;
        if (_vectorized && n >= 16)
        {
            var vmax = Vector512.Create(float.NegativeInfinity);
            for (; t + 16 <= n; t += 16) vmax = Vector512.Max(vmax, Vector512.Load(scores + t));
            for (int i = 0; i < 16; i++) max = MathF.Max(max, vmax[i]);
        }
        for (; t < n; t++) max = MathF.Max(max, scores[t]);
        float sum = 0;
        t = 0;
        if (_vectorized)
        {
            var vm = Vector512.Create(max);
            var vsum = Vector512<float>.Zero;
            for (; t + 16 <= n; t += 16)
            {
                var e = VectorExp.Exp(Vector512.Load(scores + t) - vm);
                e.Store(scores + t);
                vsum += e;
            }
            sum = Vector512.Sum(vsum);
        }
        for (; t < n; t++)
        {
            float e = MathF.Exp(scores[t] - max);
            scores[t] = e;
            sum += e;
        }
        return sum;
    }

    /// <summary>acc_j += sum over t in [from, to) of p_j[t] v_t, for <paramref name="count"/> rows (p rows n_positions+16 apart).</summary>
    private void WeightedValues(float* values, int from, int to, float* probabilities, int count, float* acc)
    {
        int d = _headSize;
        long pitch = _positions + 16;
        if (_vectorized)
        {
            const int Block = 8;  // keys whose values stay in L1 while every row of the group takes them
            for (int t0 = from; t0 < to; t0 += Block)
            {
                int t1 = Math.Min(to, t0 + Block);
                for (int j = 0; j < count; j++)
                {
                    float* pj = probabilities + j * pitch;
                    for (int c = 0; c < d; c += 16)
                    {
                        var a = Vector512.Load(acc + j * d + c);
                        for (int t = t0; t < t1; t++)
                            a = Vector512.FusedMultiplyAdd(Vector512.Create(pj[t]), Vector512.Load(values + (long)t * d + c), a);
                        a.Store(acc + j * d + c);
                    }
                }
            }
            return;
        }
        for (int t = from; t < to; t++)
            for (int j = 0; j < count; j++)
            {
                float w = probabilities[j * pitch + t];
                float* v = values + (long)t * d, a = acc + j * d;
                for (int i = 0; i < d; i++) a[i] += w * v[i];
            }
    }

    /// <summary>The dot products of 16 consecutive keys with q: per key a vector of partial sums, then one transposing reduction.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Dot16(float* k, float* q, int d)
    {
        var q0 = Vector512.Load(q);
        if (d == 16)
            return Reduce16(k, q0, 16);
        if (d == 32)
        {
            var q1 = Vector512.Load(q + 16);
            return Reduce16(k, q0, q1);
        }
        return Reduce16General(k, q, d);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Partial(float* k, Vector512<float> q0, Vector512<float> q1) =>
        Vector512.FusedMultiplyAdd(Vector512.Load(k + 16), q1, Vector512.Load(k) * q0);

    private static Vector512<float> Reduce16(float* k, Vector512<float> q0, Vector512<float> q1) => Transpose16(
        Partial(k, q0, q1), Partial(k + 32, q0, q1), Partial(k + 64, q0, q1), Partial(k + 96, q0, q1),
        Partial(k + 128, q0, q1), Partial(k + 160, q0, q1), Partial(k + 192, q0, q1), Partial(k + 224, q0, q1),
        Partial(k + 256, q0, q1), Partial(k + 288, q0, q1), Partial(k + 320, q0, q1), Partial(k + 352, q0, q1),
        Partial(k + 384, q0, q1), Partial(k + 416, q0, q1), Partial(k + 448, q0, q1), Partial(k + 480, q0, q1));

    private static Vector512<float> Reduce16(float* k, Vector512<float> q0, int d) => Transpose16(
        Vector512.Load(k) * q0, Vector512.Load(k + d) * q0, Vector512.Load(k + 2 * d) * q0, Vector512.Load(k + 3 * d) * q0,
        Vector512.Load(k + 4 * d) * q0, Vector512.Load(k + 5 * d) * q0, Vector512.Load(k + 6 * d) * q0, Vector512.Load(k + 7 * d) * q0,
        Vector512.Load(k + 8 * d) * q0, Vector512.Load(k + 9 * d) * q0, Vector512.Load(k + 10 * d) * q0, Vector512.Load(k + 11 * d) * q0,
        Vector512.Load(k + 12 * d) * q0, Vector512.Load(k + 13 * d) * q0, Vector512.Load(k + 14 * d) * q0, Vector512.Load(k + 15 * d) * q0);

    private static Vector512<float> Reduce16General(float* k, float* q, int d)
    {
        var p = stackalloc Vector512<float>[16];
        for (int key = 0; key < 16; key++)
        {
            var s = Vector512<float>.Zero;
            float* kk = k + key * d;
            for (int c = 0; c < d; c += 16) s = Vector512.FusedMultiplyAdd(Vector512.Load(kk + c), Vector512.Load(q + c), s);
            p[key] = s;
        }
        return Transpose16(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15]);
    }

    /// <summary>Lane i of the result is the sum of vi's 16 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Transpose16(
        Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3,
        Vector512<float> v4, Vector512<float> v5, Vector512<float> v6, Vector512<float> v7,
        Vector512<float> v8, Vector512<float> v9, Vector512<float> v10, Vector512<float> v11,
        Vector512<float> v12, Vector512<float> v13, Vector512<float> v14, Vector512<float> v15)
    {
        // Per 128-bit lane: (a0+a2, b0+b2, a1+a3, b1+b3) for each pair (a, b).
        var u0 = Avx512F.UnpackLow(v0, v1) + Avx512F.UnpackHigh(v0, v1);
        var u1 = Avx512F.UnpackLow(v2, v3) + Avx512F.UnpackHigh(v2, v3);
        var u2 = Avx512F.UnpackLow(v4, v5) + Avx512F.UnpackHigh(v4, v5);
        var u3 = Avx512F.UnpackLow(v6, v7) + Avx512F.UnpackHigh(v6, v7);
        var u4 = Avx512F.UnpackLow(v8, v9) + Avx512F.UnpackHigh(v8, v9);
        var u5 = Avx512F.UnpackLow(v10, v11) + Avx512F.UnpackHigh(v10, v11);
        var u6 = Avx512F.UnpackLow(v12, v13) + Avx512F.UnpackHigh(v12, v13);
        var u7 = Avx512F.UnpackLow(v14, v15) + Avx512F.UnpackHigh(v14, v15);
        // Per 128-bit lane: the lane's sums of four vectors.
        var w0 = Avx512F.Shuffle(u0, u1, 0b01_00_01_00) + Avx512F.Shuffle(u0, u1, 0b11_10_11_10);
        var w1 = Avx512F.Shuffle(u2, u3, 0b01_00_01_00) + Avx512F.Shuffle(u2, u3, 0b11_10_11_10);
        var w2 = Avx512F.Shuffle(u4, u5, 0b01_00_01_00) + Avx512F.Shuffle(u4, u5, 0b11_10_11_10);
        var w3 = Avx512F.Shuffle(u6, u7, 0b01_00_01_00) + Avx512F.Shuffle(u6, u7, 0b11_10_11_10);
        // Across the four 128-bit lanes.
        var x = Avx512F.Shuffle4x128(w0, w1, 0b10_00_10_00) + Avx512F.Shuffle4x128(w0, w1, 0b11_01_11_01);
        var y = Avx512F.Shuffle4x128(w2, w3, 0b10_00_10_00) + Avx512F.Shuffle4x128(w2, w3, 0b11_01_11_01);
        return Avx512F.Shuffle4x128(x, y, 0b10_00_10_00) + Avx512F.Shuffle4x128(x, y, 0b11_01_11_01);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var l in _lanes) l.Dispose();
    }

    /// <summary>One thread's rows and scratch buffers (the pointers are the buffers', which this lane owns).</summary>
    private sealed class Lane : IDisposable
    {
        private readonly NativeBuffer<float> _scores, _queries, _acc, _sums, _block, _query, _queryScales;
        private readonly NativeBuffer<int> _queryGroups, _corrections;
        public readonly float* Scores;   // [rows, n_positions] scores, then probabilities
        public readonly float* Queries;  // [query slots, head_size] scaled queries (a row's heads of an item: RunItem)
        public readonly float* Acc;      // [query slots, head_size] weighted values
        public readonly float* Sums;     // [rows] softmax denominators
        public readonly float* Block;    // [chunk, head_size] keys or values of a compressed cache, as fp32
        public readonly float* Query;    // [head_size] one row's query times CompressedKernels.HalfScale (fp16)
        public readonly int* QueryGroups;    // [query slots, head_size / 4] the queries quantized for Int8Blocks (4 bytes an int)
        public readonly float* QueryScales;  // [query slots] their scales
        public readonly int* Corrections;    // [query slots] 128 x the sums of their bytes
        public readonly int[] Members;       // step rows by group
        public readonly int[] GroupStart;    // group g: Members[GroupStart[g]..GroupStart[g+1]]
        public readonly int[] SharedLength;  // by group
        public readonly int[] Position;      // by step row
        public readonly int[] Slot;          // by step row: its cache slot
        public int Groups;

        /// <param name="querySlots">Queries an item holds at most: maxBatch rows x the heads an item takes.</param>
        public Lane(int maxBatch, int querySlots, int positions, int headSize, int chunk)
        {
            _block = new NativeBuffer<float>((long)chunk * headSize);
            Block = _block.Pointer;
            _query = new NativeBuffer<float>(headSize);
            Query = _query.Pointer;
            _scores = new NativeBuffer<float>((long)maxBatch * (positions + 16));
            _queries = new NativeBuffer<float>((long)querySlots * headSize);
            _acc = new NativeBuffer<float>((long)querySlots * headSize);
            _sums = new NativeBuffer<float>(maxBatch);
            Scores = _scores.Pointer;
            Queries = _queries.Pointer;
            Acc = _acc.Pointer;
            Sums = _sums.Pointer;
            _queryGroups = new NativeBuffer<int>((long)querySlots * Math.Max(1, headSize / 4));
            _queryScales = new NativeBuffer<float>(querySlots);
            _corrections = new NativeBuffer<int>(querySlots);
            QueryGroups = _queryGroups.Pointer;
            QueryScales = _queryScales.Pointer;
            Corrections = _corrections.Pointer;
            Members = new int[maxBatch];
            GroupStart = new int[maxBatch + 1];
            SharedLength = new int[maxBatch];
            Position = new int[maxBatch];
            Slot = new int[maxBatch];
        }

        public void Dispose()
        {
            _scores.Dispose();
            _queries.Dispose();
            _acc.Dispose();
            _sums.Dispose();
            _block.Dispose();
            _query.Dispose();
            _queryGroups.Dispose();
            _queryScales.Dispose();
            _corrections.Dispose();
        }
    }
}
