using IGpt.Api.Contracts;
using IGpt.Api.Errors;
using IGpt.Api.Hosting;
using IGpt.Api.Requests;
using IGpt.Inference;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Generation;

/// <summary>The images a generation request produced, before they are encoded for the response.</summary>
public sealed record GenerationOutput(
    string Model, ulong Seed, SamplingOptions Sampling, int Rows, int Scale, IReadOnlyList<PixelImage> Images, CompletionResult Result)
{
    /// <summary>Prompt pixels, shared by every image.</summary>
    public int PromptTokens => Rows * (Images.Count > 0 ? Images[0].Width : 0);

    /// <summary>Pixels drawn, all images together (the library counts per image).</summary>
    public int GeneratedTokens => Images.Sum(image => image.Width * image.Height) - Images.Count * PromptTokens;
}

/// <summary>A checked generation request, ready for the model's scheduler.</summary>
public sealed record GenerationPlan(string Model, IGptModel Loaded, int Rows, GenerationParameters Parameters, CompletionRequest Request);

/// <summary>Turns checked request fields into a completion request for a model, and its tokens back into images.</summary>
public sealed class ImageGenerator(ImageCodec codec, IOptions<ApiOptions> options)
{
    private readonly int _maxImages = options.Value.MaxImagesPerRequest;

    public ImageCodec Codec => codec;

    /// <summary>Checks a completion request: the posted image's first <c>rows</c> rows (at model resolution) are kept, the rest is drawn.</summary>
    public GenerationPlan PlanCompletion(string id, IGptModel model, RequestFields fields)
    {
        var manifest = model.Manifest;
        var maxRows = Math.Max(1, manifest.Height - 1);
        var partial = fields.Bool(FieldSpecs.Partial) ?? false;
        var requestedRows = fields.Int(FieldSpecs.Rows, maxRows);
        var parameters = GenerationParameters.From(fields, _maxImages, model.Manifest.Sampling);

        var image = codec.DecodeForModel(fields.RequireImage(), manifest, partial);
        int rows;
        if (partial)
        {
            // The posted part, scaled to the model's width, is image.Height rows tall: that much can be kept.
            rows = requestedRows ?? Math.Min(image.Height, maxRows);
            if (rows > image.Height)
            {
                throw ApiProblemException.BadField(FieldSpecs.Rows.Name,
                    $"The field 'rows' is {rows}, but the posted part is only {image.Height} rows tall at the model's width of {manifest.Width}.");
            }
        }
        else
        {
            rows = requestedRows ?? Math.Max(1, manifest.Height / 2);
        }

        var tokens = image.ToTokens(model.Palette);
        var prompt = tokens[..(rows * manifest.Width)];
        return new GenerationPlan(id, model, rows, parameters, new CompletionRequest(prompt, parameters.Count, parameters.Sampling, parameters.Seed));
    }

    /// <summary>Checks a samples request (an empty prompt).</summary>
    public GenerationPlan PlanSamples(string id, IGptModel model, RequestFields fields)
    {
        var parameters = GenerationParameters.From(fields, _maxImages, model.Manifest.Sampling);
        return new GenerationPlan(id, model, 0, parameters, new CompletionRequest([], parameters.Count, parameters.Sampling, parameters.Seed));
    }

    public GenerationResponse ToResponse(GenerationOutput output) => new()
    {
        Model = output.Model,
        Seed = (long)output.Seed,
        Sampling = SamplingSettings.From(output.Sampling),
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

    /// <summary>
    /// An Accept: image/png answer is one strip of the n images side by side, at most 65535 pixels wide (PNG's
    /// limit as the codec writes it): checked before anything is drawn, a 400 naming scale.
    /// </summary>
    public static void EnsurePngStripFits(GenerationPlan plan)
    {
        var manifest = plan.Loaded.Manifest;
        var scale = plan.Parameters.Scale;
        long width = (long)manifest.Width * scale * plan.Parameters.Count;
        if (width > MaxPngSide || (long)manifest.Height * scale > MaxPngSide)
        {
            throw ApiProblemException.BadField(FieldSpecs.Scale.Name,
                $"The PNG of {plan.Parameters.Count} images at scale {scale} would be {width} pixels wide; at most {MaxPngSide} fit. Ask for fewer images or a smaller scale.");
        }
    }

    /// <summary>PNG's side limit as the codec writes it.</summary>
    public const int MaxPngSide = 65535;

    /// <summary>One PNG holding the images side by side.</summary>
    public byte[] ToPngStrip(GenerationOutput output) => codec.EncodePngStrip(output.Images, output.Scale);

    public static GenerationOutput Output(GenerationPlan plan, CompletionResult result)
    {
        var model = plan.Loaded;
        var width = model.Manifest.Width;
        var images = result.Images.Select(tokens => PixelImage.FromTokens(tokens, width, model.Palette)).ToArray();
        return new GenerationOutput(plan.Model, plan.Parameters.Seed, plan.Parameters.Sampling, plan.Rows, plan.Parameters.Scale, images, result);
    }

    /// <summary>An image row's pixel values (interleaved channels) from its palette tokens.</summary>
    public static int[] RowPixels(IGptModel model, int[] tokens)
    {
        var palette = model.Palette;
        var pixels = new byte[tokens.Length * palette.Channels];
        palette.Dequantize(tokens, pixels);
        return [.. pixels.Select(p => (int)p)];
    }

    private static double Milliseconds(TimeSpan span) => Math.Round(span.TotalMilliseconds, 3);
}
