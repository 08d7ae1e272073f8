using System.Text;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference.Packages;

/// <summary>
/// Reads the externally stored initializers of an ONNX model (ModelProto.graph.initializer with data_location EXTERNAL) straight
/// from the protobuf wire format: name, element type, dims and the location/offset/length of the data. Nothing else is needed
/// to hand ONNX Runtime the same tensors, and the library takes no protobuf dependency for it.
/// </summary>
internal static class OnnxInitializers
{
    public sealed record ExternalTensor(string Name, TensorElementType ElementType, long[] Dims, string Location, long Offset, long Length);

    private const int ModelGraph = 7, GraphInitializer = 5;
    private const int TensorDims = 1, TensorDataType = 2, TensorName = 8, TensorExternalData = 13, TensorDataLocation = 14;

    public static List<ExternalTensor> External(ReadOnlySpan<byte> model, string what)
    {
        try
        {
            var found = new List<ExternalTensor>();
            var r = new Reader(model);
            while (r.Next(out int field, out int wire))
            {
                if (field != ModelGraph || wire != 2) { r.Skip(wire); continue; }
                var graph = new Reader(r.Bytes());
                while (graph.Next(out field, out wire))
                {
                    if (field == GraphInitializer && wire == 2) { if (Tensor(graph.Bytes()) is { } t) found.Add(t); }
                    else graph.Skip(wire);
                }
            }
            return found;
        }
        catch (FormatException e)
        {
            throw new ModelPackageException($"{what}: not an ONNX graph ({e.Message})", e);
        }
    }

    private static ExternalTensor? Tensor(ReadOnlySpan<byte> tensor)
    {
        var r = new Reader(tensor);
        var dims = new List<long>();
        string name = "", location = "";
        long offset = 0, length = -1, dataType = 0, dataLocation = 0;
        while (r.Next(out int field, out int wire))
        {
            switch (field, wire)
            {
                case (TensorDims, 0): dims.Add((long)r.Varint()); break;
                case (TensorDims, 2):
                    var packed = new Reader(r.Bytes());
                    while (!packed.AtEnd) dims.Add((long)packed.Varint());
                    break;
                case (TensorDataType, 0): dataType = (long)r.Varint(); break;
                case (TensorName, 2): name = Encoding.UTF8.GetString(r.Bytes()); break;
                case (TensorDataLocation, 0): dataLocation = (long)r.Varint(); break;
                case (TensorExternalData, 2):
                    var (key, value) = Entry(r.Bytes());
                    if (key == "location") location = value;
                    else if (key == "offset") offset = long.Parse(value, System.Globalization.CultureInfo.InvariantCulture);
                    else if (key == "length") length = long.Parse(value, System.Globalization.CultureInfo.InvariantCulture);
                    break;
                default: r.Skip(wire); break;
            }
        }
        if (dataLocation != 1 || location.Length == 0 || length < 0) return null;
        var type = dataType switch { 1 => TensorElementType.Float, 10 => TensorElementType.Float16, _ => TensorElementType.DataTypeMax };
        return new ExternalTensor(name, type, [.. dims], location, offset, length);
    }

    private static (string Key, string Value) Entry(ReadOnlySpan<byte> entry)
    {
        var r = new Reader(entry);
        string key = "", value = "";
        while (r.Next(out int field, out int wire))
        {
            if (field == 1 && wire == 2) key = Encoding.UTF8.GetString(r.Bytes());
            else if (field == 2 && wire == 2) value = Encoding.UTF8.GetString(r.Bytes());
            else r.Skip(wire);
        }
        return (key, value);
    }

    /// <summary>Protobuf wire format: (field number, wire type) keys, varints, fixed 32/64-bit values, length-delimited bytes.</summary>
    private ref struct Reader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _at;

        public readonly bool AtEnd => _at >= _data.Length;

        public bool Next(out int field, out int wire)
        {
            field = wire = 0;
            if (AtEnd) return false;
            ulong key = Varint();
            field = (int)(key >> 3);
            wire = (int)(key & 7);
            return true;
        }

        public ulong Varint()
        {
            ulong value = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (AtEnd) throw new FormatException("truncated varint");
                byte b = _data[_at++];
                value |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return value;
            }
            throw new FormatException("varint longer than 10 bytes");
        }

        public ReadOnlySpan<byte> Bytes()
        {
            ulong n = Varint();
            if (n > (ulong)(_data.Length - _at)) throw new FormatException("length past the end");
            var bytes = _data.Slice(_at, (int)n);
            _at += (int)n;
            return bytes;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: Advance(8); break;
                case 2: Bytes(); break;
                case 5: Advance(4); break;
                default: throw new FormatException($"wire type {wire}");
            }
        }

        private void Advance(int n)
        {
            if (n > _data.Length - _at) throw new FormatException("value past the end");
            _at += n;
        }
    }
}
