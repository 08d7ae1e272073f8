using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace IGpt.Inference.Engine;

internal enum CopyDirection { DeviceToDevice, HostToDevice, DeviceToHost }

/// <summary>
/// Where the decoder's bound buffers (KV cache, step inputs, step logits) live and how bytes move
/// between them and the host: the only thing the CPU and CUDA paths of <see cref="KvCacheDecoder"/>
/// do differently. "Device" is host memory on the CPU path, so its copies are plain memory copies.
/// </summary>
internal abstract unsafe class DecoderMemory : IDisposable
{
    /// <summary>What the OrtValues over this memory are created with.</summary>
    public abstract OrtMemoryInfo Info { get; }
    /// <summary>Whether the buffers are host memory (then the host and bound buffers can be the same).</summary>
    public abstract bool IsHost { get; }
    /// <summary>Zeroed memory, freed when this is disposed (Dispose may be called more than once).</summary>
    public abstract IntPtr Allocate(long bytes);
    /// <summary>
    /// Copies <paramref name="height"/> rows of <paramref name="width"/> bytes, <paramref name="srcPitch"/>
    /// and <paramref name="dstPitch"/> bytes apart (one KV head's positions per row). Completes before it returns.
    /// </summary>
    public abstract void Copy2D(IntPtr dst, long dstPitch, IntPtr src, long srcPitch, long width, long height, CopyDirection direction);
    public void Copy(IntPtr dst, IntPtr src, long bytes, CopyDirection direction) => Copy2D(dst, bytes, src, bytes, bytes, 1, direction);
    public abstract void Dispose();
}

/// <summary>The CPU provider's memory: <see cref="NativeBuffer{T}"/> blocks and memory copies.</summary>
internal sealed unsafe class HostMemory : DecoderMemory
{
    private readonly List<NativeBuffer<byte>> _blocks = [];

    public override OrtMemoryInfo Info => OrtMemoryInfo.DefaultInstance;
    public override bool IsHost => true;

    public override IntPtr Allocate(long bytes)
    {
        var block = new NativeBuffer<byte>(bytes);
        _blocks.Add(block);
        return block.Address;
    }

    public override void Copy2D(IntPtr dst, long dstPitch, IntPtr src, long srcPitch, long width, long height, CopyDirection direction)
    {
        for (long row = 0; row < height; row++)
            Buffer.MemoryCopy((byte*)src + row * srcPitch, (byte*)dst + row * dstPitch, width, width);
    }

    public override void Dispose()
    {
        foreach (var block in _blocks) block.Dispose();
        _blocks.Clear();
    }
}

/// <summary>
/// CUDA device memory: allocated from the decoder session's own CUDA allocator (so it counts against
/// gpu_mem_limit and is freed before the session), copied with the CUDA runtime that the CUDA provider
/// has already loaded. ORT 1.31's OrtEnv.CopyTensors needs a plugin-registered EP's data transfer (not the
/// CUDA provider appended to session options) and copies whole tensors, while a slot copy is strided:
/// cudaMemcpy2DAsync moves one slot's first positions of every head in one call per buffer.
/// Each copy runs on the legacy default stream and is synchronized before it returns; a session run
/// returns with its own stream synchronized, so copies and runs never overlap.
/// </summary>
internal sealed unsafe class CudaMemory : DecoderMemory
{
    private const int MemcpyHostToDevice = 1, MemcpyDeviceToHost = 2, MemcpyDeviceToDevice = 3;

    private readonly int _deviceId;
    private readonly OrtMemoryInfo _info;
    private readonly OrtAllocator _allocator;
    private readonly List<OrtMemoryAllocation> _allocations = [];
    private readonly CudaRuntime _cuda;
    private bool _disposed;

    public CudaMemory(InferenceSession session, int deviceId)
    {
        _deviceId = deviceId;
        _cuda = CudaRuntime.Load();
        _info = new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, deviceId, OrtMemType.Default);
        try { _allocator = new OrtAllocator(session, _info); }
        catch
        {
            _info.Dispose();
            throw;
        }
    }

    public override OrtMemoryInfo Info => _info;
    public override bool IsHost => false;

    public override IntPtr Allocate(long bytes)
    {
        // OrtAllocator.Allocate takes a uint: one KV buffer (one layer's keys or values) must stay under 4 GiB.
        if (bytes > uint.MaxValue) throw new ModelPackageException($"a device buffer of {bytes} bytes is over 4 GiB; lower MaxBatch");
        var allocation = _allocator.Allocate((uint)Math.Max(bytes, 1));
        _allocations.Add(allocation);
        var p = allocation.DangerousGetHandle();
        SetDevice();
        _cuda.Check(_cuda.MemsetAsync(p, 0, (nuint)bytes, 0), "cudaMemsetAsync");
        _cuda.Check(_cuda.StreamSynchronize(0), "cudaStreamSynchronize");
        return p;
    }

    public override void Copy2D(IntPtr dst, long dstPitch, IntPtr src, long srcPitch, long width, long height, CopyDirection direction)
    {
        if (width == 0 || height == 0) return;
        int kind = direction switch
        {
            CopyDirection.HostToDevice => MemcpyHostToDevice,
            CopyDirection.DeviceToHost => MemcpyDeviceToHost,
            _ => MemcpyDeviceToDevice,
        };
        SetDevice();
        _cuda.Check(_cuda.Memcpy2DAsync(dst, (nuint)dstPitch, src, (nuint)srcPitch, (nuint)width, (nuint)height, kind, 0), "cudaMemcpy2DAsync");
        _cuda.Check(_cuda.StreamSynchronize(0), "cudaStreamSynchronize");
    }

    // The CUDA runtime's current device is per thread; the scheduler's thread has never set one.
    private void SetDevice() => _cuda.Check(_cuda.SetDevice(_deviceId), "cudaSetDevice");

    public override void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var a in _allocations) a.Dispose();
        _allocations.Clear();
        _allocator.Dispose();
        _info.Dispose();
    }
}

/// <summary>The few CUDA runtime entry points the decoder needs, bound at run time (no build-time CUDA dependency).</summary>
internal sealed unsafe class CudaRuntime
{
    // The CUDA provider of Microsoft.ML.OnnxRuntime.Gpu 1.31 links CUDA 13's runtime, so it is already loaded when the provider is.
    private static readonly string[] s_names = OperatingSystem.IsWindows()
        ? ["cudart64_13.dll", "cudart64_130.dll"]
        : ["libcudart.so.13", "libcudart.so"];
    private static CudaRuntime? s_instance;

    public delegate* unmanaged<int, int> SetDevice;
    public delegate* unmanaged<IntPtr, int, nuint, IntPtr, int> MemsetAsync;
    public delegate* unmanaged<IntPtr, nuint, IntPtr, nuint, nuint, nuint, int, IntPtr, int> Memcpy2DAsync;
    public delegate* unmanaged<IntPtr, int> StreamSynchronize;
    private delegate* unmanaged<int, IntPtr> _getErrorString;

    public static CudaRuntime Load()
    {
        if (s_instance is { } loaded) return loaded;
        foreach (var name in s_names)
        {
            if (!NativeLibrary.TryLoad(name, out var lib)) continue;
            var rt = new CudaRuntime
            {
                SetDevice = (delegate* unmanaged<int, int>)NativeLibrary.GetExport(lib, "cudaSetDevice"),
                MemsetAsync = (delegate* unmanaged<IntPtr, int, nuint, IntPtr, int>)NativeLibrary.GetExport(lib, "cudaMemsetAsync"),
                Memcpy2DAsync = (delegate* unmanaged<IntPtr, nuint, IntPtr, nuint, nuint, nuint, int, IntPtr, int>)NativeLibrary.GetExport(lib, "cudaMemcpy2DAsync"),
                StreamSynchronize = (delegate* unmanaged<IntPtr, int>)NativeLibrary.GetExport(lib, "cudaStreamSynchronize"),
                _getErrorString = (delegate* unmanaged<int, IntPtr>)NativeLibrary.GetExport(lib, "cudaGetErrorString"),
            };
            return s_instance = rt;
        }
        throw new DllNotFoundException($"the CUDA runtime ({string.Join(" or ", s_names)}) cannot be loaded");
    }

    public void Check(int error, string call)
    {
        if (error == 0) return;
        throw new InvalidOperationException($"{call} failed: CUDA error {error} ({Marshal.PtrToStringAnsi(_getErrorString(error))})");
    }
}
