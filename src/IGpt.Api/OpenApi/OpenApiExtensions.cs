using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using Microsoft.OpenApi;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace IGpt.Api.OpenApi;

public static class OpenApiExtensions
{
    /// <summary>Swagger document at /swagger/v1/swagger.json (snake_case schemas, XML comments), UI at /swagger.</summary>
    public static IServiceCollection AddApiDocumentation(this IServiceCollection services)
    {
        services.AddEndpointsApiExplorer();
        // Schemas follow the API's own JSON options (snake_case), not MVC's.
        services.AddTransient<ISerializerDataContractResolver>(sp =>
            new JsonSerializerDataContractResolver(sp.GetRequiredService<IOptions<JsonOptions>>().Value.SerializerOptions));
        services.AddSwaggerGen(options =>
        {
            options.SwaggerDoc("v1", new OpenApiInfo
            {
                Title = "IGpt API",
                Version = "v1",
                Description = "Image GPT: complete the top of an image, draw unconditional samples, classify images, embed "
                    + "them and score their likelihood with the models under models/. Errors are RFC 9457 problem+json.",
            });
            // Relative: the server that serves the document. An absolute address taken from the request would be the
            // proxy's backend address (http, an internal host) behind a TLS-terminating proxy, and Swagger UI would call it.
            options.AddServer(new OpenApiServer { Url = "/", Description = "The service that serves this document" });
            var xml = Path.Combine(AppContext.BaseDirectory, "IGpt.Api.xml");
            if (File.Exists(xml)) options.IncludeXmlComments(xml);
            options.MapType<JsonObject>(() => new OpenApiSchema { Type = JsonSchemaType.Object, AdditionalPropertiesAllowed = true });
            options.SupportNonNullableReferenceTypes();
            options.DocumentFilter<TagDescriptionsFilter>();
            options.OperationFilter<RequestBodyOperationFilter>();
            options.OperationFilter<ResponseDocsOperationFilter>();
            ApiKeySecurityFilter.AddSchemes(options);
        });
        return services;
    }

    public static WebApplication UseApiDocumentation(this WebApplication app)
    {
        app.UseSwagger();
        app.UseSwaggerUI(options =>
        {
            options.SwaggerEndpoint("/swagger/v1/swagger.json", "IGpt API v1");
            options.DocumentTitle = "IGpt API";
            options.EnableDeepLinking();
            options.EnableTryItOutByDefault();
        });
        return app;
    }
}
