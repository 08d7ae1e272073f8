using System.Runtime.InteropServices;

namespace IGpt.Inference.Engine;

/// <summary>
/// One host buffer of the library: <see cref="Length"/> elements, 64-byte aligned (a cache line, an AVX-512
/// vector), zeroed. It owns its memory as a SafeHandle does: freed once, by Dispose or else by the finalizer,
/// so a buffer whose owner failed half-way through its constructor is not leaked. Holders read
/// <see cref="Pointer"/> on the hot path and keep the buffer (not the pointer) as what they depend on.
/// </summary>
internal sealed unsafe class NativeBuffer<T> : SafeHandle where T : unmanaged
{
    public NativeBuffer(long length) : base(IntPtr.Zero, ownsHandle: true)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        nuint bytes = (nuint)(Math.Max(length, 1) * sizeof(T));
        var p = NativeMemory.AlignedAlloc(bytes, 64);
        NativeMemory.Clear(p, bytes);
        SetHandle((IntPtr)p);
        Length = length;
    }

    /// <summary>Elements the buffer holds.</summary>
    public long Length { get; }

    /// <summary>The first element; valid until the buffer is disposed.</summary>
    public T* Pointer => (T*)handle;

    public IntPtr Address => handle;

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        NativeMemory.AlignedFree((void*)handle);
        return true;
    }
}
