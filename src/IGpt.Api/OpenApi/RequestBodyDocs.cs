using IGpt.Api.Requests;

namespace IGpt.Api.OpenApi;

/// <summary>
/// Endpoint metadata describing a body that the handler reads itself (RequestReader) from its declared fields
/// (<paramref name="Shape"/>): JSON as the component <paramref name="SchemaName"/> with an example Swagger UI can send
/// as it is, and the same fields as a multipart form. <paramref name="Generates"/>: the route draws images, so it also
/// answers image/png and text/event-stream, with the generation headers.
/// </summary>
public sealed record RequestBodyDocs(RequestShape Shape, string SchemaName, string JsonExample, bool Required, bool Generates)
{
    /// <summary>For a route that does not generate: what it answers to Accept: image/png (null when it answers only JSON).</summary>
    public string? PngAnswer { get; init; }

    /// <summary>An 8x8 grey gradient PNG, base64: a working example image for any model (it is resized).</summary>
    public const string ExampleImage =
        "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAF0lEQVR42mNkUIAAJg4owM1ghzEYMBkAczwClyLb+HsAAAAASUVORK5CYII=";
}
