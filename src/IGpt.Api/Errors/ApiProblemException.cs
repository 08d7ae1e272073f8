namespace IGpt.Api.Errors;

/// <summary>A client error found while handling a request; becomes an RFC 9457 problem with this status.</summary>
public sealed class ApiProblemException(int status, string title, string detail, string? field = null) : Exception(detail)
{
    public int Status { get; } = status;
    public string Title { get; } = title;
    public string Detail { get; } = detail;

    /// <summary>The request field at fault, reported in the problem's <c>errors</c> map.</summary>
    public string? Field { get; } = field;

    public static ApiProblemException BadField(string field, string detail) =>
        new(StatusCodes.Status400BadRequest, "Invalid request field", detail, field);

    public static ApiProblemException TooLarge(string detail, string? field = null) =>
        new(StatusCodes.Status413PayloadTooLarge, "Request too large", detail, field);

    public static ApiProblemException UnsupportedMediaType(string detail, string? field = null) =>
        new(StatusCodes.Status415UnsupportedMediaType, "Unsupported media type", detail, field);
}
