using System.Globalization;
using IGpt.Api.Hosting;

namespace IGpt.Api.Requests;

/// <summary>How a field's text is read.</summary>
public enum FieldKind { Integer, Number, Boolean, Image }

/// <summary>
/// One request body field, declared once (<see cref="RequestShape"/>): <see cref="RequestReader"/> accepts it,
/// <see cref="RequestFields"/> checks its value against this range, and the OpenAPI document describes it (type, range,
/// default, example) from the same declaration, for the multipart form and the JSON body alike.
/// </summary>
public sealed record FieldSpec(string Name, FieldKind Kind, string Description)
{
    public double? Minimum { get; init; }

    /// <summary>The value must be greater than <see cref="Minimum"/>, not equal to it.</summary>
    public bool MinimumExclusive { get; init; }

    /// <summary>The largest value; null where a setting or the model sets it (the caller passes it to the check).</summary>
    public double? Maximum { get; init; }

    /// <summary>The setting that bounds the value where <see cref="Maximum"/> is null (Api:MaxImagesPerRequest for n).</summary>
    public Func<ApiOptions, int>? ConfiguredMaximum { get; init; }

    /// <summary>The value a missing field takes (an int, float or bool); null where it depends on the model or is random.</summary>
    public object? Default { get; init; }

    /// <summary>The value the OpenAPI document shows (and Swagger UI's form fills in); the default when null.</summary>
    public object? Example { get; init; }

    /// <summary>The range in words, for error messages: "greater than 0 and at most 100".</summary>
    public string RangeText(double? maximum = null)
    {
        var max = maximum ?? Maximum;
        var low = Minimum is { } min ? (MinimumExclusive ? $"greater than {Text(min)}" : $"at least {Text(min)}") : null;
        var high = max is { } m ? $"at most {Text(m)}" : null;
        return string.Join(" and ", new[] { low, high }.OfType<string>());
    }

    public bool InRange(double value, double? maximum = null)
    {
        if (Minimum is { } min && (MinimumExclusive ? value <= min : value < min)) return false;
        // A range that starts at 0 refuses -0 too: it is what "-1e-50" parses to, a value the client meant as negative.
        if (Minimum is >= 0 && double.IsNegative(value)) return false;
        return (maximum ?? Maximum) is not { } max || value <= max;
    }

    public static string Text(double value) => value.ToString(CultureInfo.InvariantCulture);
}
