namespace IGpt.Api.Requests;

/// <summary>Which fields a route's body may hold; the OpenAPI document describes the same list.</summary>
public sealed record RequestShape(IReadOnlyList<FieldSpec> Fields)
{
    public bool HasImage => Fields.Contains(FieldSpecs.Image);

    public FieldSpec? Find(string name) => Fields.FirstOrDefault(f => f.Name == name);

    public static RequestShape Completion { get; } = new([FieldSpecs.Image, FieldSpecs.Rows, FieldSpecs.Partial, .. FieldSpecs.Sampling]);
    public static RequestShape Samples { get; } = new(FieldSpecs.Sampling);
    public static RequestShape Classification { get; } = new([FieldSpecs.Image, FieldSpecs.Top]);
    public static RequestShape Embeddings { get; } = new([FieldSpecs.Image, FieldSpecs.Layer]);
    public static RequestShape Likelihoods { get; } = new([FieldSpecs.Image, FieldSpecs.Scale]);
}

/// <summary>Every request body field of the API, with its range and default.</summary>
public static class FieldSpecs
{
    /// <summary>
    /// The largest seed: 2^53-1, the largest integer that every client holds exactly (a JavaScript number, a C# long),
    /// so that a seed echoed in a response can always be sent back.
    /// </summary>
    public const long MaxSeed = (1L << 53) - 1;

    public const int MaxScale = 16;
    public const float MaxTemperature = 100;

    // The values of missing fields, for the parsers and the document alike. Temperature, top_k and top_p have none
    // here: a missing one takes the model's default (model.json "sampling", shown by GET /v1/models/{model}).
    public const int DefaultCount = 1, DefaultScale = 1, DefaultTop = 5;

    /// <summary>How a sampling field's default is described; <paramref name="global"/> is the value for a package that sets none.</summary>
    private static string ModelDefault(string global) =>
        $"default: the model's, `sampling` in GET /v1/models/{{model}}: {global} unless its package sets another; "
        + "a field left out takes the model's value even when other sampling fields are sent";

    public static readonly FieldSpec Image = new("image", FieldKind.Image,
        "The image: PNG or JPEG, a file in a multipart form, base64 in JSON (a data: URL prefix is allowed). It is converted to the "
        + "model's channels and resized to the model's resolution (completions with partial=true: only the width is matched).");

    public static readonly FieldSpec Rows = Integer("rows", 1, null, null,
        "Rows of the model-resolution image kept as the prompt, 1 to height-1 (default: half the height; partial=true: all posted rows).")
        with { Example = 7 };

    public static readonly FieldSpec Partial = new("partial", FieldKind.Boolean,
        "true when the posted image is only the top part of a picture: it is scaled to the model's width and keeps its aspect ratio (default false).")
    {
        Default = false,
    };

    public static readonly FieldSpec N = Integer("n", 1, null, DefaultCount,
        "Number of images, 1 to Api:MaxImagesPerRequest (16 unless configured; default 1).")
        with { ConfiguredMaximum = api => api.MaxImagesPerRequest };

    // No Default and no Example: Swagger UI would fill its form with either and send it, overriding the model's default.
    public static readonly FieldSpec Temperature = new("temperature", FieldKind.Number,
        $"Sampling temperature, 0 to {MaxTemperature} ({ModelDefault("1.0")}). 0 is greedy decoding: "
        + "every pixel takes its most probable colour, so seed, top_k and top_p make no difference and every image of the request is the same.")
    {
        Minimum = 0, Maximum = MaxTemperature,
    };

    public static readonly FieldSpec TopK = Integer("top_k", 0, int.MaxValue, null,
        $"Sample only from the k most probable colours; 0 turns it off ({ModelDefault("0")}).");

    public static readonly FieldSpec TopP = new("top_p", FieldKind.Number,
        $"Nucleus sampling: the smallest set of colours whose probability reaches p, 0 < p <= 1; 1 turns it off ({ModelDefault("1")}).")
    {
        Minimum = 0, MinimumExclusive = true, Maximum = 1,
    };

    public static readonly FieldSpec Seed = Integer("seed", 0, MaxSeed, null,
        $"Random seed, 0 to {MaxSeed} (2^53-1; default: a random one, echoed in the response and the X-Seed header).")
        with { Example = 42 };

    public static readonly FieldSpec Scale = Integer("scale", 1, MaxScale, DefaultScale,
        $"Nearest-neighbour enlargement of the returned images, 1 to {MaxScale} (default 1).");

    public static readonly FieldSpec Stream = new("stream", FieldKind.Boolean,
        "true: answer with server-sent events (a `row` event per finished image row, `heartbeat`s, then `result` or `error`); "
        + "Accept: text/event-stream does the same (default false).")
    {
        Default = false,
    };

    public static readonly FieldSpec Top = Integer("top", 1, int.MaxValue, DefaultTop,
        "How many classes to return, 1 or more (default 5; at most the model's class count are returned).");

    public static readonly FieldSpec Layer = Integer("layer", 0, null, null,
        "Which layer's features to return, 0 to n_layer: layer i < n_layer is the input of block i after its first norm, "
        + "n_layer the final norm's output (default: the layer whose features a linear probe read best, GET /v1/models' embedding_layer).")
        with { Example = 1 };

    /// <summary>The fields completions and samples share.</summary>
    public static readonly FieldSpec[] Sampling = [N, Temperature, TopK, TopP, Seed, Scale, Stream];

    /// <param name="maximum">Null where a setting or the model sets it.</param>
    /// <param name="fallback">The value of a missing field; null where it depends on the model or is random.</param>
    private static FieldSpec Integer(string name, int minimum, long? maximum, int? fallback, string description) =>
        new(name, FieldKind.Integer, description) { Minimum = minimum, Maximum = maximum, Default = fallback };
}
