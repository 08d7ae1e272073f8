using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Hosting;

public static class ApiServiceExtensions
{
    /// <summary>The HTTP layer: options "Api" (validated at start), snake_case JSON, body size limits for Kestrel and forms.</summary>
    public static IServiceCollection AddApi(this IServiceCollection services)
    {
        services.AddOptions<ApiOptions>()
            .BindConfiguration(ApiOptions.SectionName)
            .ValidateOnStart();
        // The same validator as the Inference and ImageLimits sections: the DataAnnotations, errors naming the key.
        services.AddSingleton<IValidateOptions<ApiOptions>>(new SettingsValidator<ApiOptions>(ApiOptions.SectionName));

        services.ConfigureHttpJsonOptions(options =>
        {
            options.SerializerOptions.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
            options.SerializerOptions.DefaultIgnoreCondition = JsonIgnoreCondition.Never;
        });

        // Bodies over the limit get 413 from Kestrel (BadHttpRequestException, turned into a problem) and from the form reader.
        services.AddOptions<KestrelServerOptions>()
            .Configure<IOptions<ApiOptions>>((kestrel, api) => kestrel.Limits.MaxRequestBodySize = api.Value.MaxRequestBytes);
        services.AddOptions<FormOptions>()
            .Configure<IOptions<ApiOptions>>((form, api) =>
            {
                form.MultipartBodyLengthLimit = api.Value.MaxRequestBytes;
                form.ValueLengthLimit = (int)Math.Min(api.Value.MaxRequestBytes, int.MaxValue);
            });
        return services;
    }
}
