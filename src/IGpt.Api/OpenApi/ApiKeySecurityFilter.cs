using IGpt.Api.Contracts;
using IGpt.Api.Security;
using Microsoft.OpenApi;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace IGpt.Api.OpenApi;

/// <summary>
/// The two ways to send an API key, as OpenAPI security schemes (Swagger UI's Authorize button), and on every
/// operation a key guards (/v1/..., see <see cref="ApiKeys.Guards"/>) a requirement of either one.
/// </summary>
public sealed class ApiKeySecurityFilter : IOperationFilter
{
    public const string BearerScheme = "Bearer";
    public const string HeaderScheme = "ApiKey";

    public static void AddSchemes(SwaggerGenOptions options)
    {
        const string when = "Needed only when the service is configured with API keys (Api:Keys).";
        options.AddSecurityDefinition(BearerScheme, new OpenApiSecurityScheme
        {
            Type = SecuritySchemeType.Http,
            Scheme = "bearer",
            Description = $"An API key sent as 'Authorization: Bearer KEY'. {when}",
        });
        options.AddSecurityDefinition(HeaderScheme, new OpenApiSecurityScheme
        {
            Type = SecuritySchemeType.ApiKey,
            In = ParameterLocation.Header,
            Name = ApiKeys.HeaderName,
            Description = $"An API key sent as '{ApiKeys.HeaderName}: KEY'. {when}",
        });
        options.OperationFilter<ApiKeySecurityFilter>();
    }

    public void Apply(OpenApiOperation operation, OperationFilterContext context)
    {
        var path = "/" + (context.ApiDescription.RelativePath ?? "");
        if (!ApiKeys.Guards(path))
        {
            // Said outright: no key is needed here (health), rather than left for a reader to guess.
            operation.Security = [];
            return;
        }
        // Two requirements: either scheme will do (one requirement naming both would ask for both).
        operation.Security =
        [
            new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference(BearerScheme, context.Document)] = [] },
            new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference(HeaderScheme, context.Document)] = [] },
        ];
        operation.Responses ??= new OpenApiResponses();
        operation.Responses.TryAdd("401", new OpenApiResponse { Description = "No API key, or not a valid one (only when the service has keys)." });
        operation.Responses.TryAdd("429", new OpenApiResponse
        {
            Description = "The client has Api:MaxConcurrentRequestsPerClient requests in flight already.",
            Headers = new Dictionary<string, IOpenApiHeader>
            {
                [ResponseHeaders.RetryAfter] = ResponseDocsOperationFilter.RetryAfter("with every 429"),
            },
        });
    }
}
