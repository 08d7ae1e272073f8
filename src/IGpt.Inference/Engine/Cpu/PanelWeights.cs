namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// A product's weight W [k, n] as <see cref="RowKernels"/> read it: each whole block of 64 columns in a panel of its own
/// (the block's k rows of 64, one after another), and the columns past the last whole block where the package holds
/// W. Why: in the package's row-major layout a block's k rows are n floats apart, so a product walks k runs of 256 bytes at
/// a stride of 0.5-4 KiB, which the hardware prefetcher follows poorly and which, where the stride is a multiple of 2 KiB,
/// fall into a few sets of L1; a panel is one run, streamed from L1 or L2 by every four rows of input. The products sum the
/// same terms in the same order either way, so their results do not change (tested). Figures: benchmarks/README.md
/// ("Weights in panels").
/// A panel holds fp32 (<see cref="Panels"/>), or with int16 weights (<see cref="Quantized"/>, Inference:KernelWeightType) each
/// column's weights as signed 13-bit integers against the column's scale (<see cref="Scales"/>: its largest magnitude / 4095),
/// two rows of W interleaved (<see cref="Pairs"/>), which vpmaddwd multiplies by two inputs at a time.
/// </summary>
internal readonly unsafe struct PanelWeight
{
    /// <summary>The largest magnitude of an int16 weight or input (13 bits): 64 products of two such stay within an int32.</summary>
    public const int Int16Range = 4095;

    /// <summary>Pairs of rows (vpmaddwd's) the int16 kernels sum in an int32 before adding into floats: 32 x 2 x 4095^2 &lt; 2^31.</summary>
    public const int PairsPerChunk = 32;

    public PanelWeight(float* panels, float* rows, int k, int n, short* pairs = null, float* scales = null)
    {
        Panels = panels;
        Rows = rows;
        (K, N) = (k, n);
        Pairs = pairs;
        Scales = scales;
    }

    /// <summary>fp32 panels: the block of columns 64b..64b+63 at Panels + 64 b k, its row i 64 i floats on (null when int16).</summary>
    public readonly float* Panels;

    /// <summary>
    /// int16 panels: the block of columns 64b..64b+63 at Pairs + 128 b <see cref="PairRows"/>; its pair p (rows 2p and
    /// 2p + 1 of W) 128 shorts on, column j's two weights at 2j and 2j + 1 (a row past k: 0). Null for fp32 panels.
    /// </summary>
    public readonly short* Pairs;

    /// <summary>With <see cref="Pairs"/>: each panel column's scale (a weight is its integer times it), <see cref="PanelColumns"/> floats.</summary>
    public readonly float* Scales;

    /// <summary>W as the package holds it, [k, n] row-major: read for the columns from <see cref="PanelColumns"/> on.</summary>
    public readonly float* Rows;

    public readonly int K, N;

    /// <summary>The columns in whole blocks of 64, which are read from the panels.</summary>
    public int PanelColumns => N / 64 * 64;

    /// <summary>Whether the panels hold int16 weights (<see cref="Pairs"/>), not fp32.</summary>
    public bool Quantized => Pairs != null;

    /// <summary>Pairs of W's rows in an int16 panel: k / 2 rounded up.</summary>
    public int PairRows => (K + 1) / 2;

    /// <summary>The fp32 panel of the block that starts at column <paramref name="c"/> (a multiple of 64 below <see cref="PanelColumns"/>).</summary>
    public float* Block(int c) => Panels + (long)(c / 64) * K * 64;

    /// <summary>The int16 panel of the block that starts at column <paramref name="c"/>.</summary>
    public short* PairBlock(int c) => Pairs + (long)(c / 64) * PairRows * 128;
}

/// <summary>
/// The panels of several weights (<see cref="PanelWeight"/>), copied once from where the package holds them into native
/// buffers that this owns: what <see cref="KernelStep"/> multiplies by. The package's weights stay where they are (the sessions
/// read them too), so the kernels hold a second copy of every whole 64-column block: as fp32, or as int16 at half the bytes.
/// </summary>
internal sealed unsafe class PanelWeights : IDisposable
{
    private readonly NativeBuffer<float> _floats;
    private readonly NativeBuffer<short> _shorts;
    private readonly PanelWeight[] _weights;

    /// <param name="weights">Each weight's address (fp32, [k, n] row-major) and shape, in the order the indexer gives them back.</param>
    public PanelWeights(IReadOnlyList<(IntPtr Address, int K, int N)> weights)
        : this([.. weights.Select(w => (w.Address, w.K, w.N, false))])
    {
    }

    /// <param name="weights">
    /// Each weight's address (fp32, [k, n] row-major), shape and whether its panels hold int16 weights (else fp32), in the order
    /// the indexer gives them back.
    /// </param>
    public PanelWeights(IReadOnlyList<(IntPtr Address, int K, int N, bool Int16)> weights)
    {
        long floats = 0, shorts = 0;
        foreach (var (_, k, n, int16) in weights)
        {
            long columns = n / 64 * 64;
            if (int16) (shorts, floats) = (shorts + 2L * ((k + 1) / 2) * columns, floats + columns);
            else floats += k * columns;
        }
        _floats = new NativeBuffer<float>(floats);
        _shorts = new NativeBuffer<short>(shorts);
        _weights = new PanelWeight[weights.Count];
        float* nextFloat = _floats.Pointer;
        short* nextShort = _shorts.Pointer;
        for (int i = 0; i < weights.Count; i++)
        {
            var (address, k, n, int16) = weights[i];
            float* w = (float*)address;
            int columns = n / 64 * 64;
            if (!int16)
            {
                _weights[i] = new PanelWeight(nextFloat, w, k, n);
                for (int c = 0; c < columns; c += 64, nextFloat += (long)k * 64)
                    for (int r = 0; r < k; r++)
                        new ReadOnlySpan<float>(w + (long)r * n + c, 64).CopyTo(new Span<float>(nextFloat + (long)r * 64, 64));
                continue;
            }
            float* scales = nextFloat;
            nextFloat += columns;
            _weights[i] = new PanelWeight(null, w, k, n, nextShort, scales);
            int pairs = (k + 1) / 2;
            for (int c = 0; c < columns; c++)
            {
                float largest = 0;
                for (int r = 0; r < k; r++) largest = MathF.Max(largest, MathF.Abs(w[(long)r * n + c]));
                scales[c] = largest / PanelWeight.Int16Range;
                float inverse = largest > 0 ? PanelWeight.Int16Range / largest : 0;
                short* block = nextShort + (long)(c / 64) * pairs * 128 + 2 * (c % 64);
                for (int r = 0; r < k; r++)
                    block[(long)(r / 2) * 128 + r % 2] = (short)Math.Clamp(MathF.Round(w[(long)r * n + c] * inverse), -PanelWeight.Int16Range, PanelWeight.Int16Range);
            }
            nextShort += 2L * pairs * columns;
        }
    }

    /// <summary>The weight at <paramref name="index"/> of the constructor's list.</summary>
    public PanelWeight this[int index] => _weights[index];

    public void Dispose()
    {
        _floats.Dispose();
        _shorts.Dispose();
    }
}
