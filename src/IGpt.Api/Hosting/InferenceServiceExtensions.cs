using IGpt.Api.Caching;
using IGpt.Api.Catalog;
using IGpt.Api.Generation;
using IGpt.Inference;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Hosting;

public static class InferenceServiceExtensions
{
    /// <summary>
    /// The inference library (options "Inference" and "ImageLimits", validated at start) and the API's model services:
    /// <see cref="ModelLoader"/> loads every package under Inference:ModelsPath when the host starts, and the catalog
    /// (the API's view of them) comes from it.
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
        services.AddSingleton<ModelLoader>();
        services.AddHostedService(sp => sp.GetRequiredService<ModelLoader>());
        services.AddSingleton(sp => sp.GetRequiredService<ModelLoader>().Catalog);
        services.AddSingleton<ImageGenerator>();
        services.AddSingleton<ClassificationCache>();
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
