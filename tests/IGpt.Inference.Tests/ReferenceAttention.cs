namespace IGpt.Inference.Tests;

/// <summary>
/// The attention the library's kernels must reproduce, in double: for each row and head, softmax(q.k / sqrt(d)) v over
/// cached positions 0..position[row] of a [rows, heads, positions, headSize] cache. The caller writes the step's new
/// keys and values into the cache first.
/// </summary>
internal static class ReferenceAttention
{
    public static double[] Expected(float[] qkv, float[] keys, float[] values, int rows, int heads, int headSize,
        int positions, int[] position)
    {
        int embd = heads * headSize;
        int Index(int row, int head, int pos) => ((row * heads + head) * positions + pos) * headSize;
        var expected = new double[rows * embd];
        for (int r = 0; r < rows; r++)
            for (int h = 0; h < heads; h++)
            {
                var s = new double[position[r] + 1];
                for (int t = 0; t <= position[r]; t++)
                {
                    double dot = 0;
                    for (int i = 0; i < headSize; i++) dot += qkv[r * 3 * embd + h * headSize + i] * (double)keys[Index(r, h, t) + i];
                    s[t] = dot / Math.Sqrt(headSize);
                }
                double max = s.Max(), sum = 0;
                for (int t = 0; t < s.Length; t++) sum += s[t] = Math.Exp(s[t] - max);
                for (int i = 0; i < headSize; i++)
                {
                    double o = 0;
                    for (int t = 0; t < s.Length; t++) o += s[t] / sum * values[Index(r, h, t) + i];
                    expected[r * embd + h * headSize + i] = o;
                }
            }
        return expected;
    }
}
