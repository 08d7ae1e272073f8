using System.Text.Json.Nodes;
using IGpt.Api.Contracts;
using IGpt.Api.Requests;
using Microsoft.AspNetCore.Mvc;
using Microsoft.OpenApi;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace IGpt.Api.OpenApi;

/// <summary>
/// What the model routes answer beyond their handlers' return types, declared so that generated clients expose it:
/// generation's image/png and text/event-stream answers (the events' data schemas), the likelihoods' image/png answer,
/// the response headers X-Seed, X-Cache and Server-Timing, and Retry-After on 503.
/// </summary>
public sealed class ResponseDocsOperationFilter : IOperationFilter
{
    public void Apply(OpenApiOperation operation, OperationFilterContext context)
    {
        var docs = context.ApiDescription.ActionDescriptor.EndpointMetadata.OfType<RequestBodyDocs>().FirstOrDefault();
        if (docs is null || operation.Responses is null) return;

        if (operation.Responses.TryGetValue("200", out var found) && found is OpenApiResponse ok)
        {
            ok.Headers ??= new Dictionary<string, IOpenApiHeader>();
            ok.Content ??= new Dictionary<string, OpenApiMediaType>();
            if (docs.Generates)
            {
                ok.Description = "The images as JSON (base64 PNGs); with Accept: image/png one PNG of the n images side by side "
                    + "(n*width*scale x height*scale); with stream=true or Accept: text/event-stream server-sent events.";
                ok.Content["image/png"] = new OpenApiMediaType { Schema = new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary" } };
                ok.Content["text/event-stream"] = new OpenApiMediaType { Schema = EventSchema(context) };
                ok.Headers[ResponseHeaders.Seed] = Header("The sampling seed used (streamed answers too).",
                    new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int64", Minimum = "0" });
                ok.Headers[ResponseHeaders.Cache] = CacheHeader("whether the prompt's key/value cache came from the prefix cache (not on streamed answers)");
                ok.Headers[ResponseHeaders.ServerTiming] = Header(
                    "Milliseconds per phase: queue;dur=…, prefill;dur=…, decode;dur=… (not on streamed answers).",
                    new OpenApiSchema { Type = JsonSchemaType.String });
            }
            else
            {
                ok.Headers[ResponseHeaders.Cache] = CacheHeader(docs.Shape == RequestShape.Classification
                    ? "whether the classification cache answered (same model, same image bytes)"
                    : "whether the analysis cache answered (same model, same image bytes; embeddings and likelihoods share it)");
                if (docs.PngAnswer is { } png)
                {
                    ok.Description = $"The answer as JSON; {png}";
                    ok.Content["image/png"] = new OpenApiMediaType { Schema = new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary" } };
                }
            }
        }
        if (operation.Responses.TryGetValue("503", out var busy) && busy is OpenApiResponse unavailable)
        {
            unavailable.Headers ??= new Dictionary<string, IOpenApiHeader>();
            unavailable.Headers[ResponseHeaders.RetryAfter] = RetryAfter("when the model's queue is full or the service is stopping");
        }
    }

    /// <summary>Seconds to wait before retrying (Api:RetryAfterSeconds).</summary>
    public static OpenApiHeader RetryAfter(string when) =>
        Header($"Seconds to wait before retrying (Api:RetryAfterSeconds); sent {when}.",
            new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int32", Minimum = "0" });

    /// <summary>
    /// The data of the stream's events, one JSON object each: "row" (<see cref="RowEvent"/>), "heartbeat"
    /// (<see cref="HeartbeatEvent"/>), then "result" (the non-streamed answer) or "error" (a problem).
    /// </summary>
    private static OpenApiSchema EventSchema(OperationFilterContext context) => new()
    {
        Description = "Server-sent events, each `data:` one JSON object: `event: row` (a RowEvent) per finished image row, "
            + "`event: heartbeat` (a HeartbeatEvent) after a quiet interval, then `event: result` (the GenerationResponse) "
            + "or `event: error` (a ProblemDetails).",
        OneOf =
        [
            context.SchemaGenerator.GenerateSchema(typeof(RowEvent), context.SchemaRepository),
            context.SchemaGenerator.GenerateSchema(typeof(HeartbeatEvent), context.SchemaRepository),
            context.SchemaGenerator.GenerateSchema(typeof(GenerationResponse), context.SchemaRepository),
            context.SchemaGenerator.GenerateSchema(typeof(ProblemDetails), context.SchemaRepository),
        ],
    };

    private static OpenApiHeader CacheHeader(string what) => Header($"hit or miss: {what}.",
        new OpenApiSchema { Type = JsonSchemaType.String, Enum = [JsonValue.Create("hit"), JsonValue.Create("miss")] });

    private static OpenApiHeader Header(string description, OpenApiSchema schema) => new() { Description = description, Schema = schema };
}
