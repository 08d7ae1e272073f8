using IGpt.Api.Contracts;
using IGpt.Api.Errors;
using IGpt.Api.Requests;
using IGpt.Inference;

namespace IGpt.Api.Models;

/// <summary>The images a generation request produced, before they are encoded for the response.</summary>
public sealed record GenerationOutput(
    string Model, ulong Seed, int Rows, int Scale, IReadOnlyList<PixelImage> Images, CompletionResult Result)
{
    /// <summary>Prompt pixels, shared by every image.</summary>
    public int PromptTokens => Rows * (Images.Count > 0 ? Images[0].Width : 0);

    /// <summary>Pixels drawn, all images together (the library counts per image).</summary>
    public int GeneratedTokens => Images.Sum(image => image.Width * image.Height) - Images.Count * PromptTokens;
}

/// <summary>Turns checked request fields into a completion request for a model, and its tokens back into images.</summary>
public sealed class ImageGenerator(ImageCodec codec)
{
    public ImageCodec Codec => codec;

    /// <summary>Completes the posted image: its first <c>rows</c> rows (at model resolution) are kept, the rest is drawn.</summary>
    public async Task<GenerationOutput> CompleteAsync(string id, IGptModel model, RequestFields fields, CancellationToken cancellationToken)
    {
        var manifest = model.Manifest;
        var maxRows = Math.Max(1, manifest.Height - 1);
        var partial = fields.Bool("partial") ?? false;
        var requestedRows = fields.Int("rows", 1, maxRows);
        var parameters = GenerationParameters.From(fields);

        var image = codec.DecodeForModel(fields.RequireImage(), manifest, partial);
        int rows;
        if (partial)
        {
            // The posted part, scaled to the model's width, is image.Height rows tall: that much can be kept.
            rows = requestedRows ?? Math.Min(image.Height, maxRows);
            if (rows > image.Height)
            {
                throw ApiProblemException.BadField("rows",
                    $"The field 'rows' is {rows}, but the posted part is only {image.Height} rows tall at the model's width of {manifest.Width}.");
            }
        }
        else
        {
            rows = requestedRows ?? Math.Max(1, manifest.Height / 2);
        }

        var tokens = image.ToTokens(model.Palette);
        var prompt = tokens[..(rows * manifest.Width)];
        var result = await model.CompleteAsync(
            new CompletionRequest(prompt, parameters.Count, parameters.Sampling, parameters.Seed), cancellationToken);
        return Output(id, model, rows, parameters, result);
    }

    /// <summary>Draws unconditional samples (an empty prompt).</summary>
    public async Task<GenerationOutput> SampleAsync(string id, IGptModel model, RequestFields fields, CancellationToken cancellationToken)
    {
        var parameters = GenerationParameters.From(fields);
        var result = await model.CompleteAsync(
            new CompletionRequest([], parameters.Count, parameters.Sampling, parameters.Seed), cancellationToken);
        return Output(id, model, 0, parameters, result);
    }

    public GenerationResponse ToResponse(GenerationOutput output) => new()
    {
        Model = output.Model,
        Seed = output.Seed,
        Rows = output.Rows,
        Images = [.. output.Images.Select(image => Convert.ToBase64String(codec.EncodePng(image, output.Scale)))],
        Usage = new UsageInfo { PromptTokens = output.PromptTokens, GeneratedTokens = output.GeneratedTokens },
        Timings = new TimingInfo
        {
            QueueMs = Milliseconds(output.Result.Queue),
            PrefillMs = Milliseconds(output.Result.Prefill),
            DecodeMs = Milliseconds(output.Result.Decode),
        },
        PrefixCacheHit = output.Result.PrefixCacheHit,
    };

    /// <summary>One PNG holding the images side by side.</summary>
    public byte[] ToPngStrip(GenerationOutput output) => codec.EncodePngStrip(output.Images, output.Scale);

    private static GenerationOutput Output(string id, IGptModel model, int rows, GenerationParameters parameters, CompletionResult result)
    {
        var width = model.Manifest.Width;
        var images = result.Images.Select(tokens => PixelImage.FromTokens(tokens, width, model.Palette)).ToArray();
        return new GenerationOutput(id, parameters.Seed, rows, parameters.Scale, images, result);
    }

    private static double Milliseconds(TimeSpan span) => Math.Round(span.TotalMilliseconds, 3);
}
