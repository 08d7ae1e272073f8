using System.Security.Cryptography;
using System.Text;
using IGpt.Api.Hosting;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Security;

/// <summary>
/// The configured API keys (Api:Keys), kept as SHA-256 hashes. A presented key is hashed and compared with every
/// configured hash in fixed time, so neither its length nor how much of it matches shows in the answer's timing.
/// </summary>
public sealed class ApiKeys
{
    public const string HeaderName = "X-Api-Key";
    private readonly byte[][] _hashes;

    public ApiKeys(IOptions<ApiOptions> options)
    {
        _hashes = [.. options.Value.Keys.Select(key => SHA256.HashData(Encoding.UTF8.GetBytes(key)))];
    }

    /// <summary>Whether keys are configured; without them every route is open.</summary>
    public bool Enabled => _hashes.Length > 0;

    /// <summary>The routes a key guards: the API (/v1/...) and /metrics. Health, the web page and Swagger UI stay open.</summary>
    public static bool Guards(PathString path) =>
        path.StartsWithSegments("/v1", StringComparison.OrdinalIgnoreCase) || path.StartsWithSegments("/metrics", StringComparison.OrdinalIgnoreCase);

    /// <summary>The key a request presents: <c>Authorization: Bearer KEY</c>, else <c>X-Api-Key: KEY</c>; null when none.</summary>
    public static string? Presented(HttpRequest request)
    {
        var authorization = request.Headers.Authorization.ToString();
        if (authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            var token = authorization["Bearer ".Length..].Trim();
            if (token.Length > 0) return token;
        }
        var header = request.Headers[HeaderName].ToString().Trim();
        return header.Length > 0 ? header : null;
    }

    /// <summary>
    /// A name for the client holding <paramref name="key"/> ("key-1" for the first configured key), never the key
    /// itself; null when the key is not one of the configured ones.
    /// </summary>
    public string? Identify(string key)
    {
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(Encoding.UTF8.GetBytes(key), hash);
        var found = -1;
        for (var i = 0; i < _hashes.Length; i++)
        {
            // Every hash is compared, match or not.
            if (CryptographicOperations.FixedTimeEquals(hash, _hashes[i]) && found < 0) found = i;
        }
        return found < 0 ? null : $"key-{found + 1}";
    }
}
