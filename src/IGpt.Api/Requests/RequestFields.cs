using System.Globalization;
using IGpt.Api.Errors;

namespace IGpt.Api.Requests;

/// <summary>
/// The fields of a request body, multipart form or JSON alike, as text; the typed getters check syntax and range
/// and throw a 400 problem that names the field.
/// </summary>
public sealed class RequestFields(IReadOnlyDictionary<string, string> values, byte[]? image)
{
    public static RequestFields Empty { get; } = new(new Dictionary<string, string>(), null);

    /// <summary>The image file's bytes (multipart file, or decoded base64), or null when none was sent.</summary>
    public byte[]? Image { get; } = image;

    public byte[] RequireImage() =>
        Image ?? throw ApiProblemException.BadField(FieldSpecs.Image.Name, "The field 'image' is required: a PNG or JPEG file (multipart) or its base64 (JSON).");

    /// <summary>An integer within <paramref name="spec"/>'s range; <paramref name="maximum"/> where a setting or the model sets it.</summary>
    public int? Int(FieldSpec spec, int? maximum = null)
    {
        var name = spec.Name;
        if (!values.TryGetValue(name, out var text)) return null;
        var min = (int)(spec.Minimum ?? int.MinValue);
        var max = maximum ?? (int)(spec.Maximum ?? int.MaxValue);
        if (HasNul(text) || !int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
        {
            throw ApiProblemException.BadField(name, $"The field '{name}' must be an integer from {min} to {max}; got '{Shorten(text)}'.");
        }
        if (value < min || value > max)
        {
            throw ApiProblemException.BadField(name, $"The field '{name}' must be from {min} to {max}; got {value}.");
        }
        return value;
    }

    /// <summary>A seed: an integer from 0 to <paramref name="spec"/>'s maximum.</summary>
    public ulong? Seed(FieldSpec spec)
    {
        var name = spec.Name;
        if (!values.TryGetValue(name, out var text)) return null;
        var max = (ulong)(spec.Maximum ?? ulong.MaxValue);
        if (HasNul(text) || !ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value))
        {
            throw ApiProblemException.BadField(name, $"The field '{name}' must be an integer from 0 to {max}; got '{Shorten(text)}'.");
        }
        if (value > max)
        {
            throw ApiProblemException.BadField(name, $"The field '{name}' must be from 0 to {max}; got {value}.");
        }
        return value;
    }

    /// <summary>A finite number within <paramref name="spec"/>'s range.</summary>
    public float? Float(FieldSpec spec)
    {
        var name = spec.Name;
        if (!values.TryGetValue(name, out var text)) return null;
        var range = spec.RangeText();
        if (HasNul(text) || !float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || !float.IsFinite(value))
        {
            throw ApiProblemException.BadField(name, $"The field '{name}' must be a number {range}; got '{Shorten(text)}'.");
        }
        if (!spec.InRange(value))
        {
            throw ApiProblemException.BadField(name, $"The field '{name}' must be {range}; got {value.ToString(CultureInfo.InvariantCulture)}.");
        }
        return value;
    }

    public bool? Bool(FieldSpec spec)
    {
        var name = spec.Name;
        if (!values.TryGetValue(name, out var text)) return null;
        return text.Trim().ToLowerInvariant() switch
        {
            "true" or "1" or "on" or "yes" => true,
            "false" or "0" or "off" or "no" => false,
            _ => throw ApiProblemException.BadField(name, $"The field '{name}' must be true or false; got '{Shorten(text)}'."),
        };
    }

    // .NET's number parsing ignores trailing NUL characters ("16\0" would be 16): a number holding one is refused.
    private static bool HasNul(string text) => text.Contains('\0');

    private static string Shorten(string text) => text.Length <= 40 ? text : text[..40] + "...";
}
