using Microsoft.AspNetCore.Http;

namespace IGpt.Api.Contracts;

// The request bodies as the OpenAPI document shows them. The endpoints read multipart forms and JSON bodies with
// RequestReader (one parser for both, so that every bad field gets a 400 naming it); these types describe the same fields.

/// <summary>The sampling fields that completions and samples share.</summary>
public abstract record GenerationFields
{
    /// <summary>Number of images, 1 to Api:MaxImagesPerRequest (16 unless configured; default 1).</summary>
    public int? N { get; init; }

    /// <summary>Sampling temperature, 0 to 100 (default 1.0). 0 is greedy decoding: every pixel takes its most probable colour, so seed, top_k and top_p make no difference and every image of the request is the same.</summary>
    public float? Temperature { get; init; }

    /// <summary>Sample only from the k most probable colours; 0 turns it off (default 0).</summary>
    public int? TopK { get; init; }

    /// <summary>Nucleus sampling: the smallest set of colours whose probability reaches p, 0 &lt; p &lt;= 1 (default 1).</summary>
    public float? TopP { get; init; }

    /// <summary>Random seed, 0 to 18446744073709551615 (default: a random one, echoed in the response).</summary>
    public ulong? Seed { get; init; }

    /// <summary>Nearest-neighbour enlargement of the returned images, 1 to 16 (default 1).</summary>
    public int? Scale { get; init; }

    /// <summary>true: answer with server-sent events (a `row` event per finished image row, `heartbeat`s, then `result`); also chosen by Accept: text/event-stream.</summary>
    public bool? Stream { get; init; }
}

/// <summary>The fields of a completion besides the image.</summary>
public abstract record CompletionFields : GenerationFields
{
    /// <summary>Rows of the model-resolution image kept as the prompt, 1 to height-1 (default: half the height; partial=true: all posted rows).</summary>
    public int? Rows { get; init; }

    /// <summary>true when the posted image is only the top part of a picture: it is scaled to the model's width and keeps its aspect ratio (default false).</summary>
    public bool? Partial { get; init; }
}

/// <summary>Complete an image (multipart/form-data).</summary>
public sealed record CompletionForm : CompletionFields
{
    /// <summary>The image to complete: PNG or JPEG. It is converted to the model's channels and resized to the model's resolution (partial=true: only the width is matched).</summary>
    public required IFormFile Image { get; init; }
}

/// <summary>Complete an image (application/json).</summary>
public sealed record CompletionJsonRequest : CompletionFields
{
    /// <summary>The image to complete: a PNG or JPEG file as base64 (a data: URL prefix is allowed).</summary>
    public required string Image { get; init; }
}

/// <summary>Draw unconditional samples (application/json; an empty body takes every default).</summary>
public sealed record SampleRequest : GenerationFields;

/// <summary>Classify an image (multipart/form-data).</summary>
public sealed record ClassificationForm
{
    /// <summary>The image to classify: PNG or JPEG, resized to the model's resolution.</summary>
    public required IFormFile Image { get; init; }

    /// <summary>How many classes to return, 1 or more (default 5; at most the model's class count are returned).</summary>
    public int? Top { get; init; }
}

/// <summary>Classify an image (application/json).</summary>
public sealed record ClassificationJsonRequest
{
    /// <summary>The image to classify: a PNG or JPEG file as base64 (a data: URL prefix is allowed).</summary>
    public required string Image { get; init; }

    /// <summary>How many classes to return, 1 or more (default 5; at most the model's class count are returned).</summary>
    public int? Top { get; init; }
}
