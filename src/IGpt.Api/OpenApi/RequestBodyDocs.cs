namespace IGpt.Api.OpenApi;

/// <summary>
/// Endpoint metadata describing a body that the handler reads itself (RequestReader): the multipart form
/// (shown in Swagger UI with a file input) and the JSON alternative with an example Swagger UI can send as it is,
/// and whether Accept: image/png is offered.
/// </summary>
public sealed record RequestBodyDocs(Type? FormType, Type JsonType, string JsonExample, bool Required, bool OffersPng)
{
    /// <summary>An 8x8 grey gradient PNG, base64: a working example image for any model (it is resized).</summary>
    public const string ExampleImage =
        "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAF0lEQVR42mNkUIAAJg4owM1ghzEYMBkAczwClyLb+HsAAAAASUVORK5CYII=";
}
