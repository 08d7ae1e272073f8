namespace IGpt.Api.Requests;

/// <summary>Which fields a route's body may hold, and whether it carries an image.</summary>
public sealed record RequestShape(IReadOnlySet<string> Fields, bool HasImage)
{
    private static readonly string[] SamplingFields = ["n", "temperature", "top_k", "top_p", "seed", "scale", "stream"];

    public static RequestShape Completion { get; } = new(new HashSet<string>([.. SamplingFields, "rows", "partial"]), HasImage: true);
    public static RequestShape Samples { get; } = new(new HashSet<string>(SamplingFields), HasImage: false);
    public static RequestShape Classification { get; } = new(new HashSet<string>(["top"]), HasImage: true);
}
