namespace IGpt.Inference.Tests;

/// <summary>
/// Six decode rows from three prompts, prefilled the way the scheduler fills slots (one prefill per prompt, then slot
/// copies): rows 0-2 are the samples of prompt A (38 tokens, or what fits), rows 3-4 of prompt B (21), row 5 SOS alone.
/// What the step paths are compared on, shared prompt entries and all (SegmentedStepTests, KernelStepTests).
/// </summary>
/// <param name="Groups">Each row's group (its first row), as KvCacheDecoder.Step takes them.</param>
/// <param name="SharedLengths">Each row's shared prompt length.</param>
/// <param name="Positions">Each row's next position (its prompt's length); the caller advances it.</param>
internal sealed record SharedPromptRows(int[] Groups, int[] SharedLengths, int[] Positions)
{
    public const int Rows = 6;

    /// <summary>Prompt A's length: the longest cache.</summary>
    public int LengthA => SharedLengths[0];

    /// <summary>Draws the prompts from <paramref name="rng"/> and prefills them into every decoder alike.</summary>
    public static SharedPromptRows Prefill(ModelManifest m, Random rng, params KvCacheDecoder[] decoders)
    {
        int p = m.Architecture.NPositions;
        int lengthA = Math.Min(38, p / 2), lengthB = Math.Min(21, p / 3);
        int[] Prompt(int n) => [m.SosTokenId, .. Enumerable.Range(1, n - 1).Select(_ => rng.Next(m.PaletteSize))];
        var prompts = new[] { Prompt(lengthA), Prompt(lengthB), Prompt(1) };
        int[] firstSlot = [0, 3, 5], count = [3, 2, 1];
        foreach (var d in decoders)
            for (int g = 0; g < 3; g++)
            {
                d.Prefill(prompts[g], 1, firstSlot[g]);
                for (int i = 1; i < count[g]; i++) d.CopySlot(firstSlot[g], firstSlot[g] + i, prompts[g].Length);
            }
        int[] groups = [0, 0, 0, 3, 3, 5], shared = [lengthA, lengthA, lengthA, lengthB, lengthB, 1];
        var positions = new int[Rows];
        for (int r = 0; r < Rows; r++) positions[r] = prompts[groups[r] == 0 ? 0 : groups[r] == 3 ? 1 : 2].Length;
        return new SharedPromptRows(groups, shared, positions);
    }
}
