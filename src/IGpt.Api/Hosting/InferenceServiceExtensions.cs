using IGpt.Api.Caching;
using IGpt.Api.Models;
using IGpt.Inference;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Hosting;

public static class InferenceServiceExtensions
{
    /// <summary>
    /// The inference library (options "Inference" and "ImageLimits", validated at start; the model registry, which loads
    /// every package under Inference:ModelsPath when the host starts) and the API's model services.
    /// A relative ModelsPath is resolved against the service root (the repository root in a checkout).
    /// </summary>
    public static IServiceCollection AddInference(this IServiceCollection services)
    {
        services.AddOptions<InferenceOptions>()
            .BindConfiguration(InferenceOptions.SectionName)
            .PostConfigure<ServiceRoot>((options, root) => options.ModelsPath = root.Resolve(options.ModelsPath))
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<InferenceOptions>, InferenceOptionsValidator>();

        services.AddOptions<ImageLimits>()
            .BindConfiguration(ImageLimits.SectionName)
            .Validate(options => Check(options.Validate) is null, "ImageLimits are invalid: MaxWidth, MaxHeight, MaxBytes and MaxPixels must be positive.")
            .ValidateOnStart();

        services.AddSingleton<ImageCodec>();
        services.AddSingleton<ModelRegistry>();
        services.AddSingleton<ModelCatalog>();
        services.AddSingleton<ModelExamples>();
        services.AddSingleton<ImageGenerator>();
        services.AddSingleton<ClassificationCache>();
        services.AddHostedService<ModelLoadingService>();
        return services;
    }

    internal static string? Check(Action validate)
    {
        try
        {
            validate();
            return null;
        }
        catch (ArgumentException e)
        {
            return e.Message;
        }
    }

    /// <summary>Names the bad setting (InferenceOptions.Validate's message) or the missing models folder.</summary>
    private sealed class InferenceOptionsValidator : IValidateOptions<InferenceOptions>
    {
        public ValidateOptionsResult Validate(string? name, InferenceOptions options)
        {
            if (Check(options.Validate) is { } error) return ValidateOptionsResult.Fail(error);
            if (!Directory.Exists(options.ModelsPath))
            {
                return ValidateOptionsResult.Fail($"Inference:ModelsPath '{options.ModelsPath}' is not a folder.");
            }
            return ValidateOptionsResult.Success;
        }
    }
}
