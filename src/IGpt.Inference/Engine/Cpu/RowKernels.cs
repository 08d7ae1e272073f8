using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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
/// The one-row kernels of <see cref="OneRowStep"/>: a matrix-vector product over a block of a weight's columns, an RMS norm
/// and quick_gelu, in Vector512 (the caller checks <see cref="Vector512.IsHardwareAccelerated"/>). A weight is read as the
/// package stores it ([in, out], row-major, as ONNX MatMul multiplies): each of a block's 64 or 128 columns is one
/// accumulator lane, and the rows stream through once, so the product is as fast as the weight can be read.
/// </summary>
internal static unsafe class RowKernels
{
    /// <summary>
    /// Columns [c0, c1) of y = x W (+ b), W [k, n] row-major, then <paramref name="output"/>. Blocks of 128 or 64 columns,
    /// then 16, then single columns. Summation runs over the rows in order.
    /// </summary>
    public static void Multiply(float* x, float* w, int k, int n, int c0, int c1, float* bias, float* y, RowOutput output)
    {
        int c = c0;
        for (; c + 128 <= c1; c += 128)
        {
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0; var a4 = a0; var a5 = a0; var a6 = a0; var a7 = a0;
            float* row = w + c;
            for (int i = 0; i < k; i++, row += n)
            {
                var xi = Vector512.Create(x[i]);
                a0 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(row), a0);
                a1 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(row + 16), a1);
                a2 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(row + 32), a2);
                a3 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(row + 48), a3);
                a4 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(row + 64), a4);
                a5 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(row + 80), a5);
                a6 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(row + 96), a6);
                a7 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(row + 112), a7);
            }
            Finish(a0, bias, y, c, output); Finish(a1, bias, y, c + 16, output);
            Finish(a2, bias, y, c + 32, output); Finish(a3, bias, y, c + 48, output);
            Finish(a4, bias, y, c + 64, output); Finish(a5, bias, y, c + 80, output);
            Finish(a6, bias, y, c + 96, output); Finish(a7, bias, y, c + 112, output);
        }
        for (; c + 64 <= c1; c += 64)
        {
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            float* row = w + c;
            for (int i = 0; i < k; i++, row += n)
            {
                var xi = Vector512.Create(x[i]);
                a0 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(row), a0);
                a1 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(row + 16), a1);
                a2 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(row + 32), a2);
                a3 = Vector512.FusedMultiplyAdd(xi, Vector512.Load(row + 48), a3);
            }
            Finish(a0, bias, y, c, output); Finish(a1, bias, y, c + 16, output);
            Finish(a2, bias, y, c + 32, output); Finish(a3, bias, y, c + 48, output);
        }
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
                (a / (Vector512<float>.One + Vector512.Exp(a * Vector512.Create(-1.702f)))).Store(y + c);
                break;
            default:
                a.Store(y + c);
                break;
        }
    }

    /// <summary>h = x / sqrt(mean(x^2) + eps) * g over n elements (iGPT's norm: no mean subtracted, no bias).</summary>
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
