using System.Text.Json;
using IGpt.Api.Errors;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Net.Http.Headers;

namespace IGpt.Api.Requests;

/// <summary>
/// Reads a POST body, multipart/form-data, application/x-www-form-urlencoded or JSON, into <see cref="RequestFields"/>:
/// the same checks for every encoding, a 400 naming the field at fault, 413 over the size limits, 415 for other media types.
/// </summary>
public static class RequestReader
{
    private static readonly string ImageField = FieldSpecs.Image.Name;

    public static async Task<RequestFields> ReadAsync(
        HttpRequest request, RequestShape shape, long maxRequestBytes, long maxImageBytes, CancellationToken cancellationToken)
    {
        if (request.ContentLength > maxRequestBytes)
        {
            throw ApiProblemException.TooLarge($"The request body is {request.ContentLength} bytes; the limit is {maxRequestBytes}.");
        }

        if (string.IsNullOrWhiteSpace(request.ContentType))
        {
            var body = await ReadBodyAsync(request, maxRequestBytes, cancellationToken);
            if (body.Length == 0 && !shape.HasImage) return RequestFields.Empty;
            throw ApiProblemException.UnsupportedMediaType(
                "The request has no Content-Type; send multipart/form-data or application/json.");
        }

        if (!MediaTypeHeaderValue.TryParse(request.ContentType, out var mediaType) || mediaType.MediaType.Value is not { } type)
        {
            throw ApiProblemException.UnsupportedMediaType($"The Content-Type '{request.ContentType}' cannot be parsed.");
        }
        if (type.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase)
            || type.Equals("application/x-www-form-urlencoded", StringComparison.OrdinalIgnoreCase))
        {
            return await ReadFormAsync(request, shape, maxRequestBytes, maxImageBytes, cancellationToken);
        }
        if (type.Equals("application/json", StringComparison.OrdinalIgnoreCase) || type.EndsWith("+json", StringComparison.OrdinalIgnoreCase))
        {
            return ReadJson(await ReadBodyAsync(request, maxRequestBytes, cancellationToken), shape, maxImageBytes);
        }
        throw ApiProblemException.UnsupportedMediaType(
            $"The Content-Type '{type}' is not supported; send multipart/form-data or application/json.");
    }

    private static async Task<RequestFields> ReadFormAsync(
        HttpRequest request, RequestShape shape, long maxRequestBytes, long maxImageBytes, CancellationToken cancellationToken)
    {
        var limit = (int)Math.Min(maxRequestBytes, int.MaxValue);
        IFormCollection form;
        try
        {
            form = await request.ReadFormAsync(
                new FormOptions { MultipartBodyLengthLimit = maxRequestBytes, ValueLengthLimit = limit, BufferBodyLengthLimit = maxRequestBytes },
                cancellationToken);
        }
        catch (IOException e) when (e is not BadHttpRequestException && !request.HttpContext.RequestAborted.IsCancellationRequested)
        {
            // The multipart reader reports a body that ends before its closing boundary as an IOException.
            throw new ApiProblemException(StatusCodes.Status400BadRequest, "Malformed form body", $"The form body cannot be read: {e.Message}");
        }

        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        byte[]? image = null;
        foreach (var (key, value) in form)
        {
            if (value.Count > 1) throw ApiProblemException.BadField(key, $"The field '{key}' is given {value.Count} times.");
            var text = value.ToString();
            if (text.Length == 0) continue; // an empty form input means "not set" (Swagger UI sends them)
            if (key == ImageField && shape.HasImage) image = DecodeBase64(text, maxImageBytes);
            else if (shape.Find(key) is not null) values[key] = text;
            else throw UnknownField(key, shape);
        }
        foreach (var file in form.Files)
        {
            if (file.Name != ImageField || !shape.HasImage) throw UnknownField(file.Name, shape);
            if (image is not null) throw ApiProblemException.BadField(ImageField, "The field 'image' is given more than once.");
            if (file.Length > maxImageBytes)
            {
                throw ApiProblemException.TooLarge($"The image is {file.Length} bytes; the limit is {maxImageBytes}.", ImageField);
            }
            image = new byte[file.Length];
            await using var stream = file.OpenReadStream();
            await stream.ReadExactlyAsync(image, cancellationToken);
        }
        return new RequestFields(values, image);
    }

    private static RequestFields ReadJson(byte[] body, RequestShape shape, long maxImageBytes)
    {
        if (body.Length == 0) return RequestFields.Empty;
        // The parser checks the structure, not the bytes inside strings: invalid UTF-8 would only fail when a string is read.
        if (!System.Text.Unicode.Utf8.IsValid(body))
        {
            throw new ApiProblemException(StatusCodes.Status400BadRequest, "Malformed JSON body", "The body is not valid UTF-8.");
        }
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(body);
        }
        catch (JsonException e)
        {
            throw new ApiProblemException(StatusCodes.Status400BadRequest, "Malformed JSON body", $"The body is not valid JSON: {e.Message}");
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new ApiProblemException(StatusCodes.Status400BadRequest, "Malformed JSON body", "The body must be a JSON object.");
            }
            var values = new Dictionary<string, string>(StringComparer.Ordinal);
            byte[]? image = null;
            foreach (var property in document.RootElement.EnumerateObject())
            {
                var key = property.Name;
                var value = property.Value;
                if (value.ValueKind == JsonValueKind.Null) continue;
                if (key == ImageField && shape.HasImage)
                {
                    if (value.ValueKind != JsonValueKind.String)
                    {
                        throw ApiProblemException.BadField(ImageField, "The field 'image' must be a string: the base64 of a PNG or JPEG file.");
                    }
                    image = DecodeBase64(value.GetString()!, maxImageBytes);
                }
                else if (shape.Find(key) is not null)
                {
                    if (value.ValueKind == JsonValueKind.String && value.GetString()!.Length == 0) continue; // "" = not set, as in forms
                    values[key] = value.ValueKind switch
                    {
                        JsonValueKind.String => value.GetString()!,
                        JsonValueKind.Number => value.GetRawText(),
                        JsonValueKind.True => "true",
                        JsonValueKind.False => "false",
                        _ => throw ApiProblemException.BadField(key, $"The field '{key}' must be a number, a boolean or a string, not an {value.ValueKind.ToString().ToLowerInvariant()}."),
                    };
                }
                else
                {
                    throw UnknownField(key, shape);
                }
            }
            return new RequestFields(values, image);
        }
    }

    private static byte[] DecodeBase64(string text, long maxImageBytes)
    {
        var payload = text.AsSpan().Trim();
        if (payload.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
        {
            var comma = payload.IndexOf(',');
            if (comma < 0 || !payload[..comma].EndsWith(";base64", StringComparison.OrdinalIgnoreCase))
            {
                throw ApiProblemException.BadField(ImageField, "The field 'image' is a data: URL without ';base64,'.");
            }
            payload = payload[(comma + 1)..];
        }
        var maxDecoded = (long)payload.Length * 3 / 4;
        if (maxDecoded > maxImageBytes + 2)
        {
            throw ApiProblemException.TooLarge($"The image is about {maxDecoded} bytes; the limit is {maxImageBytes}.", ImageField);
        }
        var buffer = new byte[maxDecoded + 3];
        if (!Convert.TryFromBase64Chars(payload, buffer, out var written))
        {
            throw ApiProblemException.BadField(ImageField, "The field 'image' is not valid base64.");
        }
        if (written == 0) throw ApiProblemException.BadField(ImageField, "The field 'image' is empty.");
        if (written > maxImageBytes)
        {
            throw ApiProblemException.TooLarge($"The image is {written} bytes; the limit is {maxImageBytes}.", ImageField);
        }
        return buffer.AsSpan(0, written).ToArray();
    }

    private static async Task<byte[]> ReadBodyAsync(HttpRequest request, long maxRequestBytes, CancellationToken cancellationToken)
    {
        using var memory = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = await request.Body.ReadAsync(chunk, cancellationToken)) > 0)
        {
            if (memory.Length + read > maxRequestBytes)
            {
                throw ApiProblemException.TooLarge($"The request body is over the limit of {maxRequestBytes} bytes.");
            }
            memory.Write(chunk, 0, read);
        }
        return memory.ToArray();
    }

    private static ApiProblemException UnknownField(string key, RequestShape shape)
    {
        var image = shape.HasImage ? [ImageField] : Array.Empty<string>();
        var known = string.Join(", ", image.Concat(shape.Fields.Where(f => f.Kind != FieldKind.Image).Select(f => f.Name).Order(StringComparer.Ordinal)));
        return ApiProblemException.BadField(key, $"Unknown field '{key}'; this route takes: {known}.");
    }
}
