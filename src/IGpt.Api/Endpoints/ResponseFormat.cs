using Microsoft.Net.Http.Headers;

namespace IGpt.Api.Endpoints;

internal static class ResponseFormat
{
    /// <summary>
    /// True when the client asks for image/png explicitly and does not prefer JSON (higher q);
    /// wildcards alone keep the JSON answer.
    /// </summary>
    public static bool WantsPng(HttpRequest request) => Prefers(request, "image/png");

    /// <summary>True when the client lists text/event-stream and does not prefer JSON (higher q).</summary>
    public static bool WantsEventStream(HttpRequest request) => Prefers(request, "text/event-stream");

    /// <summary>True when Accept names <paramref name="mediaType"/> with a quality at least that of application/json.</summary>
    private static bool Prefers(HttpRequest request, string mediaType)
    {
        if (!MediaTypeHeaderValue.TryParseList(request.Headers.Accept, out var accepted)) return false;
        double wanted = 0, json = 0;
        foreach (var type in accepted)
        {
            var quality = type.Quality ?? 1;
            if (type.MediaType.Equals(mediaType, StringComparison.OrdinalIgnoreCase)) wanted = Math.Max(wanted, quality);
            else if (type.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase)) json = Math.Max(json, quality);
        }
        return wanted > 0 && wanted >= json;
    }
}
