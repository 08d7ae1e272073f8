namespace IGpt.Inference.Generation;

/// <summary>One finished image row of one sample (generated rows only), streamed while the request runs.</summary>
/// <param name="Sample">The sample index, 0..Count-1.</param>
/// <param name="Row">The row index in the model-resolution image.</param>
/// <param name="Tokens">The row's width palette tokens.</param>
/// <param name="Elapsed">Time since the request was admitted.</param>
public sealed record ImageRowEvent(int Sample, int Row, int[] Tokens, TimeSpan Elapsed);
