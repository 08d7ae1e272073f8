using Microsoft.Net.Http.Headers;

namespace IGpt.Api.Endpoints;

internal static class ResponseFormat
{
    /// <summary>
    /// True when the client asks for image/png explicitly and does not prefer JSON (higher q);
    /// wildcards alone keep the JSON answer.
    /// </summary>
    public static bool WantsPng(HttpRequest request)
    {
        if (!MediaTypeHeaderValue.TryParseList(request.Headers.Accept, out var accepted)) return false;
        double png = 0, json = 0;
        foreach (var type in accepted)
        {
            var quality = type.Quality ?? 1;
            if (type.MediaType.Equals("image/png", StringComparison.OrdinalIgnoreCase)) png = Math.Max(png, quality);
            else if (type.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase)) json = Math.Max(json, quality);
        }
        return png > 0 && png >= json;
    }

    /// <summary>True when the client lists text/event-stream and does not prefer JSON (higher q).</summary>
    public static bool WantsEventStream(HttpRequest request)
    {
        if (!MediaTypeHeaderValue.TryParseList(request.Headers.Accept, out var accepted)) return false;
        double events = 0, json = 0;
        foreach (var type in accepted)
        {
            var quality = type.Quality ?? 1;
            if (type.MediaType.Equals("text/event-stream", StringComparison.OrdinalIgnoreCase)) events = Math.Max(events, quality);
            else if (type.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase)) json = Math.Max(json, quality);
        }
        return events > 0 && events >= json;
    }
}
