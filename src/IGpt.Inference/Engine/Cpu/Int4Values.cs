using System.Runtime.CompilerServices;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// The 4-bit value layout of <see cref="KvElement.Int8Int4"/> (its keys are <see cref="Int8Blocks"/>'). A (slot, head)'s positions
/// are stored in blocks of 16, each 16 fp32 scales (an entry's largest magnitude / 7) then 16 x padded/2 bytes of values
/// -7..7 stored + 8, as unsigned nibbles (padded: the head size rounded up to 8, zeros past it). The nibbles are placed so
/// that one 32-byte load gives two of <see cref="Int8Blocks"/>' value operands, masked and shifted apart: chunk
/// (h, c8) of 32 bytes holds dimensions 8c8..8c8+7 (4 bytes each, one per position of a group of 4), its low nibbles positions
/// 4h..4h+3 and its high nibbles positions 8+4h..8+4h+3. <see cref="Int8Blocks.Attend"/> reads them with the same weights'
/// bytes and vpdpbusd as int8 values and subtracts 8 x the weights' byte sum.
/// </summary>
internal static unsafe class Int4Values
{
    private const int Block = KvElementExtensions.Int8Block;

    /// <summary>Values an entry stores: head_size rounded up to 8 (one chunk's dimensions).</summary>
    public static int PaddedHeadSize(int headSize) => (headSize + 7) / 8 * 8;

    /// <summary>Bytes of one block of 16 positions.</summary>
    public static int BlockBytes(int padded) => Block * (padded / 2 + 4);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* BlockOf(byte* head, int position, int padded) => head + (long)(position / Block) * BlockBytes(padded);

    /// <summary>Byte of dimension <paramref name="c"/> of position p (0..15) in a block's data, and the nibble's shift (0 or 4).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (int Offset, int Shift) Place(int p, int c, int padded)
    {
        int group = p / 4;
        return (32 * ((group % 2) * (padded / 8) + c / 8) + 4 * (c % 8) + p % 4, 4 * (group / 2));
    }

    /// <summary>Writes one entry (its scale and <paramref name="padded"/> values -7..7) at <paramref name="position"/> of a (slot, head).</summary>
    public static void Write(byte* head, int position, float scale, sbyte* q, int padded)
    {
        byte* block = BlockOf(head, position, padded);
        int p = position % Block;
        ((float*)block)[p] = scale;
        byte* data = block + 4 * Block;
        for (int c = 0; c < padded; c++)
        {
            var (offset, shift) = Place(p, c, padded);
            byte keep = (byte)(0xF0 >> shift);
            data[offset] = (byte)((data[offset] & keep) | ((q[c] + 8) << shift));
        }
    }

    /// <summary>Reads the entry at <paramref name="position"/> back: its values -7..7 into <paramref name="q"/>; returns its scale.</summary>
    public static float Read(byte* head, int position, sbyte* q, int padded)
    {
        byte* block = BlockOf(head, position, padded);
        int p = position % Block;
        byte* data = block + 4 * Block;
        for (int c = 0; c < padded; c++)
        {
            var (offset, shift) = Place(p, c, padded);
            q[c] = (sbyte)(((data[offset] >> shift) & 0xF) - 8);
        }
        return ((float*)block)[p];
    }
}
