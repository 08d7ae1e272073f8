using System.Text.Json.Nodes;

namespace IGpt.Api.Contracts;

/// <summary>Every model package found under the models folder, served or failed.</summary>
public sealed record ModelListResponse
{
    /// <summary>The packages, sorted by id.</summary>
    public required IReadOnlyList<ModelResponse> Models { get; init; }
}

/// <summary>One model package: its image geometry, palette, classes, where it runs and how it was measured.</summary>
public sealed record ModelResponse
{
    /// <summary>Model id, used in the model routes (<c>/v1/models/{model}/...</c>).</summary>
    public required string Id { get; init; }

    /// <summary>
    /// <c>ready</c> when the model is served; <c>failed</c> when its package could not be loaded; <c>failing</c> when it
    /// is loaded but its last runs all failed (it still takes requests; a run that succeeds makes it ready again). See <c>error</c>.
    /// </summary>
    public required string Status { get; init; }

    /// <summary>Why the package failed to load, or why its last run failed; null when ready.</summary>
    public string? Error { get; init; }

    /// <summary>What the model is, from its manifest.</summary>
    public string? Description { get; init; }

    /// <summary>Image height in pixels the model works at (null when the manifest could not be read).</summary>
    public int? Height { get; init; }

    /// <summary>Image width in pixels the model works at.</summary>
    public int? Width { get; init; }

    /// <summary>Colour channels: 1 (grey) or 3 (RGB).</summary>
    public int? Channels { get; init; }

    /// <summary>Number of palette colours; every pixel is one of them (one token per pixel).</summary>
    public int? PaletteSize { get; init; }

    /// <summary>Class names of the classification head, in logit order; empty when the model has none.</summary>
    public required IReadOnlyList<string> Classes { get; init; }

    /// <summary>Whether <c>POST /v1/models/{model}/classifications</c> is available.</summary>
    public bool HasClassifier { get; init; }

    /// <summary>Whether <c>POST /v1/models/{model}/embeddings</c> and <c>/likelihoods</c> are available (the package has an analysis graph).</summary>
    public bool HasAnalysis { get; init; }

    /// <summary>The layers an embedding may come from, 0 to this (n_layer); null without an analysis graph.</summary>
    public int? MaxLayer { get; init; }

    /// <summary>The default embedding layer: the one whose features a linear probe read best; null without an analysis graph.</summary>
    public int? EmbeddingLayer { get; init; }

    /// <summary>ONNX Runtime execution provider the model runs on: <c>CUDA</c> or <c>CPU</c> (null when failed).</summary>
    public string? ExecutionProvider { get; init; }

    /// <summary>Why that provider was chosen (for example why CUDA could not be used).</summary>
    public string? ProviderReason { get; init; }

    /// <summary>
    /// The sampling settings a completion or samples request gets for each of temperature, top_k and top_p it leaves out:
    /// the package's defaults (model.json <c>sampling</c>), else the service's (temperature 1, top_k 0, top_p 1). Null when
    /// the manifest could not be read.
    /// </summary>
    public SamplingSettings? Sampling { get; init; }

    /// <summary>Measured quality from the manifest (free-form numbers, e.g. test_bits_per_token), shown as they are.</summary>
    public JsonObject? Metrics { get; init; }

    /// <summary>How the model was trained, from the manifest (dataset, tokens_seen, wall_time_s, hardware).</summary>
    public JsonObject? Training { get; init; }
}

/// <summary>A model's default sampling settings (the request fields of the same names).</summary>
public sealed record SamplingSettings
{
    /// <summary>Sampling temperature; 0 is greedy decoding.</summary>
    public required float Temperature { get; init; }

    /// <summary>Sample only from the k most probable colours; 0 = off.</summary>
    public required int TopK { get; init; }

    /// <summary>Nucleus sampling threshold, 0 &lt; p &lt;= 1; 1 = off.</summary>
    public required float TopP { get; init; }

    public static SamplingSettings From(SamplingOptions options) =>
        new() { Temperature = options.Temperature, TopK = options.TopK, TopP = options.TopP };
}
