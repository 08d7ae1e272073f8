namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// A product's weight W [k, n] as <see cref="RowKernels"/> read it: each whole block of 64 columns in a panel of its own
/// (the block's k rows of 64 floats, one after another), and the columns past the last whole block where the package holds
/// W. Why: in the package's row-major layout a block's k rows are n floats apart, so a product walks k runs of 256 bytes at
/// a stride of 0.5-4 KiB, which the hardware prefetcher follows poorly and which, where the stride is a multiple of 2 KiB,
/// fall into a few sets of L1; a panel is one run, streamed from L1 or L2 by every four rows of input. The products sum the
/// same terms in the same order either way, so their results do not change (tested). Figures: benchmarks/README.md
/// ("Weights in panels").
/// </summary>
internal readonly unsafe struct PanelWeight(float* panels, float* rows, int k, int n)
{
    /// <summary>The panels: the block of columns 64b..64b+63 at Panels + 64 b k, its row i 64 i floats on.</summary>
    public readonly float* Panels = panels;

    /// <summary>W as the package holds it, [k, n] row-major: read for the columns from <see cref="PanelColumns"/> on.</summary>
    public readonly float* Rows = rows;

    public readonly int K = k, N = n;

    /// <summary>The columns in whole blocks of 64, which are read from the panels.</summary>
    public int PanelColumns => N / 64 * 64;

    /// <summary>The panel of the block that starts at column <paramref name="c"/> (a multiple of 64 below <see cref="PanelColumns"/>).</summary>
    public float* Block(int c) => Panels + (long)(c / 64) * K * 64;
}

/// <summary>
/// The panels of several weights (<see cref="PanelWeight"/>), copied once from where the package holds them into one native
/// buffer that this owns: what <see cref="KernelStep"/> multiplies by. The package's weights stay where they are (the sessions
/// read them too), so the kernels hold a second copy of every whole 64-column block.
/// </summary>
internal sealed unsafe class PanelWeights : IDisposable
{
    private readonly NativeBuffer<float> _buffer;
    private readonly PanelWeight[] _weights;

    /// <param name="weights">Each weight's address (fp32, [k, n] row-major) and shape, in the order the indexer gives them back.</param>
    public PanelWeights(IReadOnlyList<(IntPtr Address, int K, int N)> weights)
    {
        long total = 0;
        foreach (var (_, k, n) in weights) total += (long)k * (n / 64 * 64);
        _buffer = new NativeBuffer<float>(total);
        _weights = new PanelWeight[weights.Count];
        float* next = _buffer.Pointer;
        for (int i = 0; i < weights.Count; i++)
        {
            var (address, k, n) = weights[i];
            float* w = (float*)address;
            _weights[i] = new PanelWeight(next, w, k, n);
            for (int c = 0; c + 64 <= n; c += 64, next += (long)k * 64)
                for (int r = 0; r < k; r++)
                    new ReadOnlySpan<float>(w + (long)r * n + c, 64).CopyTo(new Span<float>(next + (long)r * 64, 64));
        }
    }

    /// <summary>The weight at <paramref name="index"/> of the constructor's list.</summary>
    public PanelWeight this[int index] => _weights[index];

    public void Dispose() => _buffer.Dispose();
}
