using System.Text.Json.Nodes;
using Microsoft.OpenApi;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace IGpt.Api.OpenApi;

/// <summary>
/// Writes the request body of endpoints carrying <see cref="RequestBodyDocs"/>: multipart/form-data with the
/// form's properties inline (so Swagger UI draws a form with a file input for <c>image</c>) and application/json
/// with a working example; adds image/png to the 200 response where the endpoint can answer with a PNG.
/// </summary>
public sealed class RequestBodyOperationFilter : IOperationFilter
{
    // Swagger UI fills form inputs from examples, else with 0 / true: each field gets its default (JSON),
    // or "" (an empty input, which is not sent) where the default depends on the model or is random.
    private static readonly Dictionary<string, string> FormExamples = new()
    {
        ["rows"] = "\"\"",
        ["partial"] = "false",
        ["n"] = "1",
        ["temperature"] = "1.0",
        ["top_k"] = "0",
        ["top_p"] = "1.0",
        ["seed"] = "\"\"",
        ["scale"] = "1",
        ["top"] = "5",
    };

    public void Apply(OpenApiOperation operation, OperationFilterContext context)
    {
        var docs = context.ApiDescription.ActionDescriptor.EndpointMetadata.OfType<RequestBodyDocs>().FirstOrDefault();
        if (docs is null) return;

        var content = new Dictionary<string, OpenApiMediaType>();
        if (docs.FormType is not null)
        {
            content["multipart/form-data"] = new OpenApiMediaType
            {
                Schema = Inline(context.SchemaGenerator.GenerateSchema(docs.FormType, context.SchemaRepository), context.SchemaRepository),
                Encoding = new Dictionary<string, OpenApiEncoding> { ["image"] = new OpenApiEncoding { ContentType = "image/png, image/jpeg" } },
            };
        }
        content["application/json"] = new OpenApiMediaType
        {
            Schema = context.SchemaGenerator.GenerateSchema(docs.JsonType, context.SchemaRepository),
            Example = JsonNode.Parse(docs.JsonExample),
        };
        operation.RequestBody = new OpenApiRequestBody
        {
            Required = docs.Required,
            Description = docs.FormType is null
                ? "JSON fields (an empty body takes every default)."
                : "The image and fields as multipart/form-data (image is a file), or as JSON (image is base64).",
            Content = content,
        };

        if (docs.OffersPng && operation.Responses?.TryGetValue("200", out var ok) == true && ok is OpenApiResponse response)
        {
            response.Content ??= new Dictionary<string, OpenApiMediaType>();
            response.Content["image/png"] = new OpenApiMediaType
            {
                Schema = new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary" },
            };
            response.Description = "The images as JSON (base64 PNGs), or with Accept: image/png one PNG of the n images side by side "
                + "(n*width*scale x height*scale). Headers: X-Seed (the seed used), X-Cache (hit or miss of the prompt prefix cache).";
        }
    }

    /// <summary>The properties of a schema written in place of its $ref, with form-friendly examples.</summary>
    private static IOpenApiSchema Inline(IOpenApiSchema schema, SchemaRepository repository)
    {
        if (schema is not OpenApiSchemaReference reference || reference.Reference.Id is not { } id
            || !repository.Schemas.TryGetValue(id, out var target))
        {
            return schema;
        }
        var properties = new Dictionary<string, IOpenApiSchema>();
        foreach (var (name, property) in target.Properties ?? new Dictionary<string, IOpenApiSchema>())
        {
            properties[name] = property is OpenApiSchema concrete && FormExamples.TryGetValue(name, out var example)
                ? new OpenApiSchema
                {
                    Type = concrete.Type,
                    Format = concrete.Format,
                    Description = concrete.Description,
                    Example = JsonNode.Parse(example),
                }
                : property;
        }
        return new OpenApiSchema
        {
            Type = JsonSchemaType.Object,
            Description = target.Description,
            Properties = properties,
            Required = target.Required is null ? null : new HashSet<string>(target.Required),
        };
    }
}
