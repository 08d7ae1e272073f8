using System.Text.Json.Nodes;
using IGpt.Api.Hosting;
using IGpt.Api.Requests;
using Microsoft.Extensions.Options;
using Microsoft.OpenApi;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace IGpt.Api.OpenApi;

/// <summary>
/// Writes the request body of endpoints carrying <see cref="RequestBodyDocs"/> from the route's declared fields
/// (<see cref="FieldSpec"/>): application/json first, as a named component with a working example, then
/// multipart/form-data with the same fields inline (Swagger UI draws a form with a file input for <c>image</c>).
/// JSON comes first because generators take the first body they can build: Kiota's C# client can send JSON but not
/// a multipart body it generated for the form.
/// </summary>
public sealed class RequestBodyOperationFilter(IOptions<ApiOptions> options) : IOperationFilter
{
    public void Apply(OpenApiOperation operation, OperationFilterContext context)
    {
        var docs = context.ApiDescription.ActionDescriptor.EndpointMetadata.OfType<RequestBodyDocs>().FirstOrDefault();
        if (docs is null) return;

        if (!context.SchemaRepository.Schemas.ContainsKey(docs.SchemaName))
        {
            context.SchemaRepository.AddDefinition(docs.SchemaName, ObjectSchema(docs.Shape, multipart: false));
        }
        var content = new Dictionary<string, OpenApiMediaType>
        {
            ["application/json"] = new()
            {
                Schema = new OpenApiSchemaReference(docs.SchemaName, context.Document),
                Example = JsonNode.Parse(docs.JsonExample),
            },
            ["multipart/form-data"] = new()
            {
                Schema = ObjectSchema(docs.Shape, multipart: true),
                Encoding = docs.Shape.HasImage
                    ? new Dictionary<string, OpenApiEncoding> { [FieldSpecs.Image.Name] = new() { ContentType = "image/png, image/jpeg" } }
                    : null,
            },
        };
        operation.RequestBody = new OpenApiRequestBody
        {
            Required = docs.Required,
            Description = docs.Shape.HasImage
                ? "The image and fields as JSON (image is base64) or as multipart/form-data (image is a file)."
                : "The fields as JSON or as multipart/form-data; an empty body takes every default.",
            Content = content,
        };
    }

    private OpenApiSchema ObjectSchema(RequestShape shape, bool multipart) => new()
    {
        Type = JsonSchemaType.Object,
        Properties = shape.Fields.ToDictionary(f => f.Name, f => (IOpenApiSchema)FieldSchema(f, multipart)),
        Required = shape.HasImage ? new HashSet<string> { FieldSpecs.Image.Name } : null,
    };

    /// <summary>A field's schema: its type, range, default and an example of that type (Swagger UI fills the form from it).</summary>
    private OpenApiSchema FieldSchema(FieldSpec field, bool multipart)
    {
        var maximum = field.Maximum ?? field.ConfiguredMaximum?.Invoke(options.Value);
        var schema = new OpenApiSchema { Description = field.Description };
        switch (field.Kind)
        {
            case FieldKind.Image:
                schema.Type = JsonSchemaType.String;
                schema.Format = multipart ? "binary" : "byte";
                break;
            case FieldKind.Integer:
                schema.Type = JsonSchemaType.Integer;
                schema.Format = maximum > int.MaxValue ? "int64" : "int32";
                break;
            case FieldKind.Number:
                schema.Type = JsonSchemaType.Number;
                schema.Format = "float";
                break;
            case FieldKind.Boolean:
                schema.Type = JsonSchemaType.Boolean;
                break;
        }
        if (field.Minimum is { } min)
        {
            if (field.MinimumExclusive) schema.ExclusiveMinimum = FieldSpec.Text(min);
            else schema.Minimum = FieldSpec.Text(min);
        }
        if (maximum is { } max) schema.Maximum = FieldSpec.Text(max);
        if (Json(field.Default) is { } defaultValue) schema.Default = defaultValue;
        if (Json(field.Example ?? field.Default) is { } example) schema.Example = example;
        return schema;
    }

    private static JsonNode? Json(object? value) => value switch
    {
        int i => JsonValue.Create(i),
        long l => JsonValue.Create(l),
        float f => JsonValue.Create(f),
        bool b => JsonValue.Create(b),
        _ => null,
    };
}
