using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>What a matrix-vector product does with each output after adding the bias.</summary>
internal enum RowOutput
{
    /// <summary>y = x W + b.</summary>
    Store,
    /// <summary>y += x W + b (a residual add).</summary>
    Add,
    /// <summary>y = quick_gelu(x W + b) = z sigmoid(1.702 z).</summary>
    QuickGelu,
}

/// <summary>
/// The kernels of <see cref="KernelStep"/>: a product of a few rows with a block of a weight's columns, an RMS norm and
/// quick_gelu, in Vector512 (the caller checks <see cref="Vector512.IsHardwareAccelerated"/>). A weight ([in, out], as ONNX
/// MatMul multiplies) is read from its panels (<see cref="PanelWeight"/>: each block of 64 columns one contiguous run): each
/// of a block's 64 columns is one accumulator lane, and the block's rows stream through once per four rows of input, so one
/// row's product is as fast as the weight can be read and four rows share each load. The kernels are compiled fully
/// optimized from their first call (AggressiveOptimization): at the JIT's first tier their vectors live on the stack and a
/// product runs several times slower, which a short-lived process or a service's first requests would see
/// (benchmarks/README.md, "Kernel steps").
/// </summary>
internal static unsafe class RowKernels
{
    /// <summary>
    /// Columns [c0, c1) of Y = X W (+ b) for <paramref name="rows"/> rows of X (<paramref name="xStride"/> floats apart) into
    /// rows of Y (<paramref name="yStride"/> apart), W [k, n] (<see cref="PanelWeight"/>), then <paramref name="output"/>. For
    /// each block of 64 columns (from a c0 that is a multiple of 64), every four rows of X stream the block's whole panel (k
    /// rows of 64, from L1 or L2 after the first four) with their 16 sums in registers; what is left (rows beyond a multiple
    /// of four, columns beyond the whole blocks) one row at a time. Every sum runs over W's rows in order from zero, so a
    /// row's result is bit for bit what it is alone. (Cutting the panel into 32 rows that stay in L1, the sums stored and
    /// reloaded between them, was slower at 16 rows: benchmarks/README.md, "Weights in panels".)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Multiply(float* x, int xStride, int rows, in PanelWeight w, int c0, int c1, float* bias, float* y, int yStride,
        RowOutput output)
    {
        int fours = rows / 4 * 4, c = c0, blocksEnd = Math.Min(c1, w.PanelColumns);
        if (fours > 0 && c % 64 == 0)
            for (; c + 64 <= blocksEnd; c += 64)
                for (int r = 0; r < fours; r += 4)
                    FourRows(x + (long)r * xStride, xStride, w.Block(c), w.K, c, bias, y + (long)r * yStride, yStride, output);
        for (int r = 0; r < rows; r++)
        {
            int from = r < fours ? c : c0;   // the four-row blocks did the columns before c
            if (from < c1) Multiply(x + (long)r * xStride, w, from, c1, bias, y + (long)r * yStride, output);
        }
    }

    /// <summary>
    /// The panel <paramref name="block"/> (W's columns c..c+63, <paramref name="k"/> rows) times four rows of X, then the bias
    /// and <paramref name="output"/> into four rows of Y.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FourRows(float* x, int xStride, float* block, int k, int c, float* bias, float* y, int yStride, RowOutput output)
    {
        float* x0 = x, x1 = x + xStride, x2 = x + 2L * xStride, x3 = x + 3L * xStride;
        var a00 = Vector512<float>.Zero; var a01 = a00; var a02 = a00; var a03 = a00; var a10 = a00; var a11 = a00; var a12 = a00; var a13 = a00;
        var a20 = a00; var a21 = a00; var a22 = a00; var a23 = a00; var a30 = a00; var a31 = a00; var a32 = a00; var a33 = a00;
        float* row = block;
        for (int i = 0; i < k; i++, row += 64)
        {
            var w0 = Vector512.Load(row);
            var w1 = Vector512.Load(row + 16);
            var w2 = Vector512.Load(row + 32);
            var w3 = Vector512.Load(row + 48);
            var b = Vector512.Create(x0[i]);
            a00 = Vector512.FusedMultiplyAdd(b, w0, a00); a01 = Vector512.FusedMultiplyAdd(b, w1, a01);
            a02 = Vector512.FusedMultiplyAdd(b, w2, a02); a03 = Vector512.FusedMultiplyAdd(b, w3, a03);
            b = Vector512.Create(x1[i]);
            a10 = Vector512.FusedMultiplyAdd(b, w0, a10); a11 = Vector512.FusedMultiplyAdd(b, w1, a11);
            a12 = Vector512.FusedMultiplyAdd(b, w2, a12); a13 = Vector512.FusedMultiplyAdd(b, w3, a13);
            b = Vector512.Create(x2[i]);
            a20 = Vector512.FusedMultiplyAdd(b, w0, a20); a21 = Vector512.FusedMultiplyAdd(b, w1, a21);
            a22 = Vector512.FusedMultiplyAdd(b, w2, a22); a23 = Vector512.FusedMultiplyAdd(b, w3, a23);
            b = Vector512.Create(x3[i]);
            a30 = Vector512.FusedMultiplyAdd(b, w0, a30); a31 = Vector512.FusedMultiplyAdd(b, w1, a31);
            a32 = Vector512.FusedMultiplyAdd(b, w2, a32); a33 = Vector512.FusedMultiplyAdd(b, w3, a33);
        }
        float* y0 = y, y1 = y + yStride, y2 = y + 2L * yStride, y3 = y + 3L * yStride;
        Finish(a00, bias, y0, c, output); Finish(a01, bias, y0, c + 16, output); Finish(a02, bias, y0, c + 32, output); Finish(a03, bias, y0, c + 48, output);
        Finish(a10, bias, y1, c, output); Finish(a11, bias, y1, c + 16, output); Finish(a12, bias, y1, c + 32, output); Finish(a13, bias, y1, c + 48, output);
        Finish(a20, bias, y2, c, output); Finish(a21, bias, y2, c + 16, output); Finish(a22, bias, y2, c + 32, output); Finish(a23, bias, y2, c + 48, output);
        Finish(a30, bias, y3, c, output); Finish(a31, bias, y3, c + 16, output); Finish(a32, bias, y3, c + 32, output); Finish(a33, bias, y3, c + 48, output);
    }

    /// <summary>
    /// Columns [c0, c1) of y = x W (+ b) for one row (<see cref="PanelWeight"/>), then <paramref name="output"/>: from a c0
    /// that is a multiple of 64, the whole blocks one panel at a time (four accumulators: the FMAs' latency over a core's
    /// one 512-bit FMA a cycle, and a one-row product waits on its weights' bytes anyway); the rest as
    /// <see cref="MultiplyRows"/> does, from W where the package holds it. Summation runs over the rows of W in order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Multiply(float* x, in PanelWeight w, int c0, int c1, float* bias, float* y, RowOutput output)
    {
        int c = c0, k = w.K, blocksEnd = Math.Min(c1, w.PanelColumns);
        if (c % 64 == 0)
        {
            for (; c + 64 <= blocksEnd; c += 64)
            {
                var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
                float* p = w.Block(c);
                for (int i = 0; i < k; i++, p += 64)
                {
                    var xi = Vector512.Create(x[i]);
                    a0 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(p), a0);
                    a1 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(p + 16), a1);
                    a2 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(p + 32), a2);
                    a3 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(p + 48), a3);
                }
                Finish(a0, bias, y, c, output); Finish(a1, bias, y, c + 16, output);
                Finish(a2, bias, y, c + 32, output); Finish(a3, bias, y, c + 48, output);
            }
        }
        if (c < c1) MultiplyRows(x, w.Rows, k, w.N, c, c1, bias, y, output);
    }

    /// <summary>
    /// Columns [c0, c1) of y = x W (+ b) for one row, W [k, n] row-major as the package holds it, then <paramref name="output"/>:
    /// 16 columns at a time, then single columns; summation runs over the rows of W in order. What the panels do not hold
    /// (the fewer than 64 columns past the last whole block), and a range that does not start at a block (no kernel step asks
    /// for one); the tests compare the panels with it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MultiplyRows(float* x, float* w, int k, int n, int c0, int c1, float* bias, float* y, RowOutput output)
    {
        int c = c0;
        for (; c + 16 <= c1; c += 16)
        {
            var a = Vector512<float>.Zero;
            float* row = w + c;
            for (int i = 0; i < k; i++, row += n) a = Vector512.FusedMultiplyAdd(Vector512.Create(x[i]), Vector512.Load(row), a);
            Finish(a, bias, y, c, output);
        }
        for (; c < c1; c++)
        {
            float s = 0;
            for (int i = 0; i < k; i++) s = MathF.FusedMultiplyAdd(x[i], w[(long)i * n + c], s);
            s += bias is null ? 0 : bias[c];
            y[c] = output switch
            {
                RowOutput.Add => y[c] + s,
                RowOutput.QuickGelu => s / (1 + MathF.Exp(-1.702f * s)),
                _ => s,
            };
        }
    }

    /// <summary>
    /// Rows of X as the int16 kernels read them: row r's k elements as signed 13-bit integers against the row's scale
    /// (its largest magnitude / <see cref="PanelWeight.Int16Range"/>; 0 for a row of zeros) into
    /// <paramref name="q"/> + r <paramref name="qStride"/> (ints: two elements each, the second of a pair past k 0), the
    /// scale into <paramref name="scales"/>[r]. Rounded to nearest.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void QuantizeRows(float* x, int xStride, int rows, int k, int* q, int qStride, float* scales)
    {
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (long)r * xStride;
            short* qr = (short*)(q + (long)r * qStride);
            float largest = KvCodec.LargestMagnitude(xr, k);
            scales[r] = largest / PanelWeight.Int16Range;
            float inverse = largest > 0 ? PanelWeight.Int16Range / largest : 0;
            var vi = Vector512.Create(inverse);
            int i = 0;
            for (; i + 16 <= k; i += 16)
                Avx512F.ConvertToVector256Int16WithSaturation(Avx512F.ConvertToVector512Int32(Vector512.Load(xr + i) * vi)).Store(qr + i);
            for (; i < k; i++) qr[i] = (short)MathF.Round(xr[i] * inverse);
            if (k % 2 == 1) qr[k] = 0;
        }
    }

    /// <summary>
    /// <see cref="Multiply(float*, int, int, in PanelWeight, int, int, float*, float*, int, RowOutput)"/> with int16 panels
    /// (<see cref="PanelWeight.Quantized"/>): the rows of X both as floats (<paramref name="x"/>, for the columns past the
    /// panels, read from W's rows in fp32) and as <see cref="QuantizeRows"/> gave them (<paramref name="q"/>,
    /// <paramref name="scales"/>). Each panel column sums the rows' integer products with vpmaddwd, 32 pairs of rows in an
    /// int32 at a time (no int32 can overflow: <see cref="PanelWeight.PairsPerChunk"/>), then in floats, and is scaled by its
    /// row's and column's scales. Why: vpmaddwd multiplies 32 pairs where a 512-bit FMA multiplies 16 floats, and the panels
    /// hold half the bytes; the cost is the weights' and the inputs' rounding to 13 bits (benchmarks/README.md, "Int16 weights").
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MultiplyQuantized(float* x, int xStride, int* q, int qStride, float* scales, int rows, in PanelWeight w, int c0, int c1,
        float* bias, float* y, int yStride, RowOutput output)
    {
        int fours = rows / 4 * 4, c = c0, blocksEnd = Math.Min(c1, w.PanelColumns), pairs = w.PairRows;
        if (c % 64 == 0)
        {
            for (; c + 64 <= blocksEnd; c += 64)
            {
                for (int r = 0; r < fours; r += 4)
                    FourRowsInt16(q + (long)r * qStride, qStride, scales + r, w.PairBlock(c), pairs, w.Scales + c, c, bias, y + (long)r * yStride,
                        yStride, output);
                for (int r = fours; r < rows; r++)
                    OneRowInt16(q + (long)r * qStride, scales[r], w.PairBlock(c), pairs, w.Scales + c, c, bias, y + (long)r * yStride, output);
            }
        }
        if (c < c1)
            for (int r = 0; r < rows; r++) MultiplyRows(x + (long)r * xStride, w.Rows, w.K, w.N, c, c1, bias, y + (long)r * yStride, output);
    }

    /// <summary>The int16 panel <paramref name="block"/> (columns c..c+63) times four rows of X as integers, into four rows of Y.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FourRowsInt16(int* q, int qStride, float* rowScales, short* block, int pairs, float* columnScales, int c, float* bias,
        float* y, int yStride, RowOutput output)
    {
        int* q0 = q, q1 = q + qStride, q2 = q + 2L * qStride, q3 = q + 3L * qStride;
        var f00 = Vector512<float>.Zero; var f01 = f00; var f02 = f00; var f03 = f00; var f10 = f00; var f11 = f00; var f12 = f00; var f13 = f00;
        var f20 = f00; var f21 = f00; var f22 = f00; var f23 = f00; var f30 = f00; var f31 = f00; var f32 = f00; var f33 = f00;
        short* row = block;
        for (int p0 = 0; p0 < pairs; p0 += PanelWeight.PairsPerChunk)
        {
            var a00 = Vector512<int>.Zero; var a01 = a00; var a02 = a00; var a03 = a00; var a10 = a00; var a11 = a00; var a12 = a00; var a13 = a00;
            var a20 = a00; var a21 = a00; var a22 = a00; var a23 = a00; var a30 = a00; var a31 = a00; var a32 = a00; var a33 = a00;
            for (int p = p0, end = Math.Min(pairs, p0 + PanelWeight.PairsPerChunk); p < end; p++, row += 128)
            {
                var w0 = Vector512.Load(row); var w1 = Vector512.Load(row + 32); var w2 = Vector512.Load(row + 64); var w3 = Vector512.Load(row + 96);
                var b = Vector512.Create(q0[p]).AsInt16();
                a00 += Avx512BW.MultiplyAddAdjacent(b, w0); a01 += Avx512BW.MultiplyAddAdjacent(b, w1);
                a02 += Avx512BW.MultiplyAddAdjacent(b, w2); a03 += Avx512BW.MultiplyAddAdjacent(b, w3);
                b = Vector512.Create(q1[p]).AsInt16();
                a10 += Avx512BW.MultiplyAddAdjacent(b, w0); a11 += Avx512BW.MultiplyAddAdjacent(b, w1);
                a12 += Avx512BW.MultiplyAddAdjacent(b, w2); a13 += Avx512BW.MultiplyAddAdjacent(b, w3);
                b = Vector512.Create(q2[p]).AsInt16();
                a20 += Avx512BW.MultiplyAddAdjacent(b, w0); a21 += Avx512BW.MultiplyAddAdjacent(b, w1);
                a22 += Avx512BW.MultiplyAddAdjacent(b, w2); a23 += Avx512BW.MultiplyAddAdjacent(b, w3);
                b = Vector512.Create(q3[p]).AsInt16();
                a30 += Avx512BW.MultiplyAddAdjacent(b, w0); a31 += Avx512BW.MultiplyAddAdjacent(b, w1);
                a32 += Avx512BW.MultiplyAddAdjacent(b, w2); a33 += Avx512BW.MultiplyAddAdjacent(b, w3);
            }
            f00 += Avx512F.ConvertToVector512Single(a00); f01 += Avx512F.ConvertToVector512Single(a01);
            f02 += Avx512F.ConvertToVector512Single(a02); f03 += Avx512F.ConvertToVector512Single(a03);
            f10 += Avx512F.ConvertToVector512Single(a10); f11 += Avx512F.ConvertToVector512Single(a11);
            f12 += Avx512F.ConvertToVector512Single(a12); f13 += Avx512F.ConvertToVector512Single(a13);
            f20 += Avx512F.ConvertToVector512Single(a20); f21 += Avx512F.ConvertToVector512Single(a21);
            f22 += Avx512F.ConvertToVector512Single(a22); f23 += Avx512F.ConvertToVector512Single(a23);
            f30 += Avx512F.ConvertToVector512Single(a30); f31 += Avx512F.ConvertToVector512Single(a31);
            f32 += Avx512F.ConvertToVector512Single(a32); f33 += Avx512F.ConvertToVector512Single(a33);
        }
        var s0 = Vector512.Load(columnScales); var s1 = Vector512.Load(columnScales + 16);
        var s2 = Vector512.Load(columnScales + 32); var s3 = Vector512.Load(columnScales + 48);
        float* y0 = y, y1 = y + yStride, y2 = y + 2L * yStride, y3 = y + 3L * yStride;
        var r0 = Vector512.Create(rowScales[0]); var r1 = Vector512.Create(rowScales[1]);
        var r2 = Vector512.Create(rowScales[2]); var r3 = Vector512.Create(rowScales[3]);
        Finish(f00 * (s0 * r0), bias, y0, c, output); Finish(f01 * (s1 * r0), bias, y0, c + 16, output);
        Finish(f02 * (s2 * r0), bias, y0, c + 32, output); Finish(f03 * (s3 * r0), bias, y0, c + 48, output);
        Finish(f10 * (s0 * r1), bias, y1, c, output); Finish(f11 * (s1 * r1), bias, y1, c + 16, output);
        Finish(f12 * (s2 * r1), bias, y1, c + 32, output); Finish(f13 * (s3 * r1), bias, y1, c + 48, output);
        Finish(f20 * (s0 * r2), bias, y2, c, output); Finish(f21 * (s1 * r2), bias, y2, c + 16, output);
        Finish(f22 * (s2 * r2), bias, y2, c + 32, output); Finish(f23 * (s3 * r2), bias, y2, c + 48, output);
        Finish(f30 * (s0 * r3), bias, y3, c, output); Finish(f31 * (s1 * r3), bias, y3, c + 16, output);
        Finish(f32 * (s2 * r3), bias, y3, c + 32, output); Finish(f33 * (s3 * r3), bias, y3, c + 48, output);
    }

    /// <summary><see cref="FourRowsInt16"/> for one row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void OneRowInt16(int* q, float rowScale, short* block, int pairs, float* columnScales, int c, float* bias, float* y, RowOutput output)
    {
        var f0 = Vector512<float>.Zero; var f1 = f0; var f2 = f0; var f3 = f0;
        short* row = block;
        for (int p0 = 0; p0 < pairs; p0 += PanelWeight.PairsPerChunk)
        {
            var a0 = Vector512<int>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            for (int p = p0, end = Math.Min(pairs, p0 + PanelWeight.PairsPerChunk); p < end; p++, row += 128)
            {
                var b = Vector512.Create(q[p]).AsInt16();
                a0 += Avx512BW.MultiplyAddAdjacent(b, Vector512.Load(row));
                a1 += Avx512BW.MultiplyAddAdjacent(b, Vector512.Load(row + 32));
                a2 += Avx512BW.MultiplyAddAdjacent(b, Vector512.Load(row + 64));
                a3 += Avx512BW.MultiplyAddAdjacent(b, Vector512.Load(row + 96));
            }
            f0 += Avx512F.ConvertToVector512Single(a0); f1 += Avx512F.ConvertToVector512Single(a1);
            f2 += Avx512F.ConvertToVector512Single(a2); f3 += Avx512F.ConvertToVector512Single(a3);
        }
        var r = Vector512.Create(rowScale);
        Finish(f0 * (Vector512.Load(columnScales) * r), bias, y, c, output);
        Finish(f1 * (Vector512.Load(columnScales + 16) * r), bias, y, c + 16, output);
        Finish(f2 * (Vector512.Load(columnScales + 32) * r), bias, y, c + 32, output);
        Finish(f3 * (Vector512.Load(columnScales + 48) * r), bias, y, c + 48, output);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Finish(Vector512<float> a, float* bias, float* y, int c, RowOutput output)
    {
        if (bias is not null) a += Vector512.Load(bias + c);
        switch (output)
        {
            case RowOutput.Add:
                (Vector512.Load(y + c) + a).Store(y + c);
                break;
            case RowOutput.QuickGelu:
                (a / (Vector512<float>.One + VectorExp.Exp(a * Vector512.Create(-1.702f)))).Store(y + c);
                break;
            default:
                a.Store(y + c);
                break;
        }
    }

    /// <summary>h = x / sqrt(mean(x^2) + eps) * g over n elements of one row (iGPT's norm: no mean subtracted, no bias).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNorm(float* x, float* g, int n, float eps, float* h)
    {
        int i = 0;
        var s = Vector512<float>.Zero;
        for (; i + 16 <= n; i += 16)
        {
            var v = Vector512.Load(x + i);
            s = Vector512.FusedMultiplyAdd(v, v, s);
        }
        float sum = Vector512.Sum(s);
        for (; i < n; i++) sum += x[i] * x[i];
        float r = 1f / MathF.Sqrt(sum / n + eps);
        var vr = Vector512.Create(r);
        i = 0;
        for (; i + 16 <= n; i += 16) (Vector512.Load(x + i) * vr * Vector512.Load(g + i)).Store(h + i);
        for (; i < n; i++) h[i] = x[i] * r * g[i];
    }
}
