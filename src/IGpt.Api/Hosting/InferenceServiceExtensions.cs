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
        // The rules are the options' DataAnnotations, run by the library's validator (errors name the key).
        services.AddSingleton<IValidateOptions<InferenceOptions>>(new SettingsValidator<InferenceOptions>(InferenceOptions.SectionName));
        services.AddSingleton<IValidateOptions<InferenceOptions>, ModelsFolderValidator>();

        services.AddOptions<ImageLimits>()
            .BindConfiguration(ImageLimits.SectionName)
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<ImageLimits>>(new SettingsValidator<ImageLimits>(ImageLimits.SectionName));

        services.AddSingleton<ImageCodec>();
        // Open unless someone holds it: decoding can be paused between steps without stopping the service.
        services.AddSingleton<StepGate>();
        services.AddSingleton<ModelLoader>();
        services.AddHostedService(sp => sp.GetRequiredService<ModelLoader>());
        services.AddSingleton(sp => sp.GetRequiredService<ModelLoader>().Catalog);
        services.AddSingleton<ModelExamples>();
        services.AddSingleton<ImageGenerator>();
        services.AddSingleton<ClassificationCache>();
        services.AddSingleton<AnalysisCache>();
        return services;
    }

    /// <summary>The models folder must exist (where the settings point, not a rule on their values).</summary>
    private sealed class ModelsFolderValidator : IValidateOptions<InferenceOptions>
    {
        public ValidateOptionsResult Validate(string? name, InferenceOptions options) =>
            string.IsNullOrWhiteSpace(options.ModelsPath) || Directory.Exists(options.ModelsPath)
                ? ValidateOptionsResult.Success
                : ValidateOptionsResult.Fail($"Inference:ModelsPath '{options.ModelsPath}' is not a folder.");
    }
}
