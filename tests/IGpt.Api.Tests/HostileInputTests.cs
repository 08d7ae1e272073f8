using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;

namespace IGpt.Api.Tests;

/// <summary>
/// Odd and hostile input on every endpoint: valid-but-odd images are served (and decoded right), hostile ones get a
/// clean 4xx problem+json, quickly. ErrorTests covers the plain field errors and body limits.
/// </summary>
[Collection(ApiCollection.Name)]
public sealed class HostileInputTests(ApiFactory factory)
{
    private const string Model = $"/v1/models/{ModelsFolder.Tiny}";
    private const string Completions = $"{Model}/completions";
    private const string Samples = $"{Model}/samples";
    private const string Classifications = $"{Model}/classifications";
    private const string Embeddings = $"{Model}/embeddings";
    private const string Likelihoods = $"{Model}/likelihoods";
    private static readonly string[] ImageRoutes = [Completions, Classifications, Embeddings, Likelihoods];
    /// <summary>The routes that only read an image (every field optional): whatever decodes must be served by each.</summary>
    private static readonly string[] ReadingRoutes = [Classifications, Embeddings, Likelihoods];
    private readonly HttpClient _client = factory.CreateClient();

    public static TheoryData<string, PngColorType, PngBitDepth, bool> PngKinds()
    {
        var data = new TheoryData<string, PngColorType, PngBitDepth, bool>();
        (PngColorType Type, PngBitDepth[] Depths)[] kinds =
        [
            (PngColorType.Grayscale, [PngBitDepth.Bit1, PngBitDepth.Bit2, PngBitDepth.Bit4, PngBitDepth.Bit8, PngBitDepth.Bit16]),
            (PngColorType.GrayscaleWithAlpha, [PngBitDepth.Bit8, PngBitDepth.Bit16]),
            (PngColorType.Rgb, [PngBitDepth.Bit8, PngBitDepth.Bit16]),
            (PngColorType.RgbWithAlpha, [PngBitDepth.Bit8, PngBitDepth.Bit16]),
            (PngColorType.Palette, [PngBitDepth.Bit1, PngBitDepth.Bit2, PngBitDepth.Bit4, PngBitDepth.Bit8]),
        ];
        foreach (var (type, depths) in kinds)
        foreach (var depth in depths)
        foreach (var interlaced in new[] { false, true })
            data.Add($"{type} {depth}{(interlaced ? " Adam7" : "")}", type, depth, interlaced);
        return data;
    }

    [Theory]
    [MemberData(nameof(PngKinds))]
    public async Task EveryPngColourTypeAndBitDepthIsServedAndDecodedRight(string kind, PngColorType type, PngBitDepth depth, bool interlaced)
    {
        // With alpha, the right half is transparent black: composited on white it must come out white.
        var hasAlpha = type is PngColorType.GrayscaleWithAlpha or PngColorType.RgbWithAlpha or PngColorType.Palette;
        var png = OddImages.Png(type, depth, interlaced, transparentRight: hasAlpha);
        var response = await _client.PostAsync(Completions, Http.Form(png, ("rows", "7"), ("seed", "1")));
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{kind}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        AssertHalvesKept(await response.ReadJsonAsync(), rows: 7, kind);
        await AssertServedByReadingRoutes(png, kind);
    }

    [Theory]
    [InlineData("cmyk.jpg")]
    [InlineData("progressive.jpg")]
    [InlineData("greyscale")]
    [InlineData("ycbcr 4:2:0")]
    [InlineData("rgb")]
    public async Task OddJpegsAreServedAndDecodedRight(string kind)
    {
        // Each is 16x8: left half black, right half white; scaled to the model's 8x8 the halves stay halves.
        var jpeg = kind switch
        {
            "greyscale" => OddImages.Jpeg(JpegColorType.Luminance, 16, 8),
            "ycbcr 4:2:0" => OddImages.Jpeg(JpegColorType.YCbCrRatio420, 16, 8),
            "rgb" => OddImages.Jpeg(JpegColorType.Rgb, 16, 8),
            _ => OddImages.Fixture(kind),
        };
        var response = await _client.PostAsync(Completions, Http.Form(jpeg, ("rows", "7"), ("seed", "1")));
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{kind}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        // Scaling 16 columns to 8 blurs the two middle columns: only the outer three on each side are checked.
        AssertHalvesKept(await response.ReadJsonAsync(), rows: 7, kind, tolerance: 60, margin: 1);
        await AssertServedByReadingRoutes(jpeg, kind);
    }

    [Fact]
    public async Task ExifRotatedJpegIsServedUpright()
    {
        // Stored 16x8 with the black half on the left, EXIF orientation 6: shown 8x16 with the black half on top.
        // As the top part of a picture (partial), the model's 8 columns keep the top 8 of its 16 rows: all black.
        var jpeg = OddImages.Fixture("exif-rotated.jpg");
        var response = await _client.PostAsync(Completions, Http.Form(jpeg, ("partial", "true"), ("rows", "7"), ("seed", "1")));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var (width, _, pixels) = TestImages.ReadGrey(Convert.FromBase64String(Http.Images(await response.ReadJsonAsync())[0]));
        for (int y = 0; y < 7; y++)
        for (int x = 0; x < width; x++)
            Assert.True(pixels[y * width + x] <= 60, $"pixel ({x}, {y}) is {pixels[y * width + x]}: the image was not turned upright");
    }

    [Theory]
    [InlineData(1, 1, false)]
    [InlineData(4096, 1, false)]
    [InlineData(1, 4096, false)]
    [InlineData(4096, 1, true)]
    [InlineData(1, 4096, true)]
    [InlineData(3, 4000, true)]
    public async Task TinyAndExtremeAspectRatioImagesAreServed(int width, int height, bool partial)
    {
        var png = TestImages.Png(width, height);
        var response = await _client.PostAsync(Completions, Http.Form(png, ("partial", partial ? "true" : "false"), ("seed", "1")));
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{width}x{height}: {await response.Content.ReadAsStringAsync()}");
        var (w, h, _) = TestImages.ReadGrey(Convert.FromBase64String(Http.Images(await response.ReadJsonAsync())[0]));
        Assert.Equal((8, 8), (w, h));
        await AssertServedByReadingRoutes(png, $"{width}x{height}");
    }

    [Theory]
    [InlineData("png", 100_000u, 100_000u)]
    [InlineData("png", 65_535u, 65_535u)]
    [InlineData("png", 4097u, 4096u)]
    [InlineData("png", 0x7FFF_FFFFu, 1u)]
    [InlineData("jpeg", 65_500u, 65_500u)]
    [InlineData("jpeg", 5000u, 10u)]
    public async Task DecompressionBombsAre413BeforeDecoding(string format, uint width, uint height)
    {
        var bomb = format == "png" ? OddImages.PngDeclaring(width, height) : OddImages.JpegDeclaring((ushort)width, (ushort)height);
        Assert.True(bomb.Length < 1024);
        foreach (var route in ImageRoutes)
        {
            var clock = Stopwatch.StartNew();
            var response = await _client.PostAsync(route, Http.Form(bomb));
            await response.AssertProblemAsync(HttpStatusCode.RequestEntityTooLarge, "image");
            // Decoding would allocate width x height x 4 bytes (40 GB for 100000 x 100000); the header check answers at once.
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"{route}: {clock.Elapsed}");
        }
    }

    [Fact]
    public async Task HeadersDeclaringNoPixelsAre400()
    {
        await (await _client.PostAsync(Completions, Http.Form(OddImages.PngDeclaring(0, 8)))).AssertProblemAsync(HttpStatusCode.BadRequest, "image");
        foreach (var route in ReadingRoutes)
            await (await _client.PostAsync(route, Http.Form(OddImages.JpegDeclaring(8, 0)))).AssertProblemAsync(HttpStatusCode.BadRequest, "image");
    }

    public static TheoryData<string, int> TruncatedImages()
    {
        var data = new TheoryData<string, int>();
        // Cut after the signature, inside IHDR, after IHDR, inside the pixel data, before IEND.
        foreach (var cut in new[] { 4, 8, 20, 33, 60 }) data.Add("png", cut);
        // Cut after SOI, inside the tables, inside the scan.
        foreach (var cut in new[] { 2, 30, 200, 400 }) data.Add("jpeg", cut);
        return data;
    }

    [Theory]
    [MemberData(nameof(TruncatedImages))]
    public async Task TruncatedImagesAre400(string format, int keep)
    {
        var whole = format == "png" ? TestImages.Png(64, 64, (x, y) => (byte)(x * y)) : TestImages.Jpeg(64, 64);
        Assert.True(keep < whole.Length / 2);
        var cut = whole[..keep];
        foreach (var route in ImageRoutes)
        {
            var response = await _client.PostAsync(route, Http.Form(cut));
            var status = response.StatusCode;
            // A cut inside the signature (PNG's 8 bytes, JPEG's SOI and first marker) is not recognised as an image
            // at all: 415; every other cut is a corrupt image: 400.
            var expected = format == "png" && keep < 8 || format == "jpeg" && keep <= 2 ? HttpStatusCode.UnsupportedMediaType : HttpStatusCode.BadRequest;
            await response.AssertProblemAsync(expected, "image");
            Assert.NotEqual(HttpStatusCode.OK, status);
        }
    }

    [Theory]
    [InlineData("tiff")]
    [InlineData("webp")]
    [InlineData("gif")]
    [InlineData("bmp")]
    [InlineData("text")]
    public async Task OtherImageFormatsAre415OnEveryImageRoute(string format)
    {
        var bytes = format switch
        {
            "tiff" => OddImages.Tiff(),
            "webp" => OddImages.Webp(),
            "gif" => TestImages.Gif(),
            "bmp" => TestImages.Bmp(),
            _ => "just some text, not an image"u8.ToArray(),
        };
        foreach (var route in ImageRoutes)
        {
            await (await _client.PostAsync(route, Http.Form(bytes))).AssertProblemAsync(HttpStatusCode.UnsupportedMediaType, "image");
            var json = Http.Json(new { image = Convert.ToBase64String(bytes) });
            await (await _client.PostAsync(route, json)).AssertProblemAsync(HttpStatusCode.UnsupportedMediaType, "image");
        }
    }

    [Theory]
    [InlineData(null)]
    [InlineData("application/json")]
    [InlineData("multipart/form-data; boundary=b")]
    [InlineData("application/x-www-form-urlencoded")]
    public async Task EmptyBodiesAreA4xxOnImageRoutesAndDefaultsOnSamples(string? contentType)
    {
        foreach (var route in ImageRoutes)
        {
            var response = await _client.PostAsync(route, Empty(contentType));
            var expected = contentType is null ? HttpStatusCode.UnsupportedMediaType : HttpStatusCode.BadRequest;
            await response.AssertProblemAsync(expected);
        }
        var samples = await _client.PostAsync(Samples, Empty(contentType));
        // Samples needs no field: an empty body of any kind means every default.
        Assert.True(samples.StatusCode == HttpStatusCode.OK, $"{contentType}: {await samples.Content.ReadAsStringAsync()}");
    }

    [Theory]
    [InlineData("text/plain")]
    [InlineData("image/png")]
    [InlineData("application/octet-stream")]
    [InlineData("application/xml")]
    [InlineData("multipart/mixed; boundary=b")]
    [InlineData("not a media type")]
    [InlineData("application/json; charset=utf-32")]
    public async Task WrongContentTypesAre4xxOnEveryPostRoute(string contentType)
    {
        foreach (var route in new[] { Completions, Samples, Classifications, Embeddings, Likelihoods })
        {
            var content = new ByteArrayContent("{\"n\": 1}"u8.ToArray());
            content.Headers.TryAddWithoutValidation("Content-Type", contentType);
            var response = await _client.PostAsync(route, content);
            var status = (int)response.StatusCode;
            // utf-32 JSON is still JSON to the reader (the bytes are UTF-8): samples may serve it; never a 5xx.
            if (contentType.StartsWith("application/json", StringComparison.Ordinal) && route == Samples) Assert.Equal(200, status);
            else await response.AssertProblemAsync(route == Samples || !contentType.StartsWith("application/json", StringComparison.Ordinal)
                ? HttpStatusCode.UnsupportedMediaType : HttpStatusCode.BadRequest);
        }
    }

    [Theory]
    [InlineData(100)]
    [InlineData(10_000)]
    [InlineData(40_000)]
    public async Task DeeplyNestedJsonIs400(int depth)
    {
        foreach (var route in new[] { Completions, Samples, Classifications, Embeddings, Likelihoods })
        {
            var nested = new string('[', depth) + new string(']', depth);
            await (await _client.PostAsync(route, Http.RawJson($"{{\"n\": {nested}}}"))).AssertProblemAsync(HttpStatusCode.BadRequest);
            await (await _client.PostAsync(route, Http.RawJson(nested))).AssertProblemAsync(HttpStatusCode.BadRequest);
            var objects = string.Concat(Enumerable.Repeat("{\"a\":", depth)) + "1" + new string('}', depth);
            await (await _client.PostAsync(route, Http.RawJson(objects))).AssertProblemAsync(HttpStatusCode.BadRequest);
        }
    }

    [Fact]
    public async Task HugeJsonUnderTheLimitIs400AndOverItIs413()
    {
        var manyKeys = "{" + string.Join(",", Enumerable.Range(0, 15_000).Select(i => $"\"k{i}\":{i}")) + "}";
        Assert.InRange(manyKeys.Length, 100_000, ApiFactory.MaxRequestBytes);
        await (await _client.PostAsync(Samples, Http.RawJson(manyKeys))).AssertProblemAsync(HttpStatusCode.BadRequest);
        var longArray = "{\"n\": [" + string.Join(",", Enumerable.Repeat("1", 100_000)) + "]}";
        await (await _client.PostAsync(Samples, Http.RawJson(longArray))).AssertProblemAsync(HttpStatusCode.BadRequest, "n");
        var longNumber = "{\"n\": 1" + new string('0', 200_000) + "}";
        await (await _client.PostAsync(Samples, Http.RawJson(longNumber))).AssertProblemAsync(HttpStatusCode.BadRequest, "n");
        var overLimit = "{\"n\": 1, \"seed\": \"" + new string('9', (int)ApiFactory.MaxRequestBytes) + "\"}";
        await (await _client.PostAsync(Samples, Http.RawJson(overLimit))).AssertProblemAsync(HttpStatusCode.RequestEntityTooLarge);
    }

    [Theory]
    [InlineData("text/html")]
    [InlineData("image/png")]
    [InlineData("application/xml")]
    [InlineData("text/event-stream")]
    public async Task ErrorsAreProblemJsonWhateverTheClientAccepts(string accept)
    {
        // The status code pages (404, 405) and the handlers alike: problem+json, not a text/plain page or a 500.
        foreach (var (method, path) in new[] { (HttpMethod.Get, "/v1/nothing"), (HttpMethod.Delete, Samples), (HttpMethod.Get, $"{Model}x") })
        {
            var request = new HttpRequestMessage(method, path);
            request.Headers.TryAddWithoutValidation("Accept", accept);
            var response = await _client.SendAsync(request);
            Assert.True((int)response.StatusCode is >= 400 and < 500, $"{method} {path}: {(int)response.StatusCode}");
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
        var bad = new HttpRequestMessage(HttpMethod.Post, Samples) { Content = Http.RawJson("{\"n\": 0}") };
        bad.Headers.TryAddWithoutValidation("Accept", accept);
        await (await _client.SendAsync(bad)).AssertProblemAsync(HttpStatusCode.BadRequest, "n");
    }

    [Fact]
    public async Task InvalidUtf8InJsonIs400()
    {
        // A lone continuation byte inside a string and inside a field name: the parser accepts both, reading them would throw.
        foreach (var json in new[] { "{\"image\": \"\xB8\"}", "{\"\xC3\": 1}", "{\"seed\": \"1\xFF\"}" })
        {
            var bytes = json.Select(c => (byte)c).ToArray();
            foreach (var route in new[] { Completions, Samples, Classifications, Embeddings, Likelihoods })
            {
                var content = new ByteArrayContent(bytes);
                content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
                await (await _client.PostAsync(route, content)).AssertProblemAsync(HttpStatusCode.BadRequest);
            }
        }
    }

    [Theory]
    [InlineData("n", "NaN")]
    [InlineData("n", "1e2")]
    [InlineData("n", "99999999999999999999")]
    [InlineData("n", "-2147483649")]
    [InlineData("n", "true")]
    [InlineData("n", "{}")]
    [InlineData("n", "\"0x10\"")]
    [InlineData("n", "\"\u0661\"")]
    [InlineData("temperature", "\"NaN\"")]
    [InlineData("temperature", "\"Infinity\"")]
    [InlineData("temperature", "\"-Infinity\"")]
    [InlineData("temperature", "1e309")]
    [InlineData("temperature", "-1e-50")]
    [InlineData("temperature", "100.5")]
    [InlineData("temperature", "\"1,5\"")]
    [InlineData("top_p", "\"∞\"")]
    [InlineData("top_p", "-0.0")]
    [InlineData("top_k", "2147483648")]
    [InlineData("top_k", "1.0")]
    [InlineData("seed", "1.5")]
    [InlineData("seed", "\"+1\"")]
    [InlineData("seed", "\" 7\"")]
    [InlineData("seed", "1e3")]
    [InlineData("scale", "\"16\\u0000\"")]
    [InlineData("stream", "2")]
    [InlineData("stream", "\"maybe\"")]
    [InlineData("stream", "[]")]
    public async Task OddNumbersAndValuesAre400NamingTheField(string field, string json)
    {
        // "NaN" without quotes is not JSON: a 400 for the body, which also counts.
        var body = $"{{\"{field}\": {json}}}";
        var response = await _client.PostAsync(Samples, Http.RawJson(body));
        await response.AssertProblemAsync(HttpStatusCode.BadRequest, json == "NaN" ? null : field);
        var form = Http.Form(TestImages.Png(), (field, json.Trim('"')));
        response = await _client.PostAsync(Completions, form);
        await response.AssertProblemAsync(HttpStatusCode.BadRequest, field);
    }

    [Theory]
    [InlineData("top", "0")]
    [InlineData("top", "\"NaN\"")]
    [InlineData("top", "-1")]
    [InlineData("top", "1e9")]
    [InlineData("top", "[5]")]
    [InlineData("n", "1")]
    [InlineData("rows", "1")]
    [InlineData("\u202Etop", "1")]
    [InlineData("image\u0000", "1")]
    [InlineData("İMAGE", "1")]
    [InlineData("__proto__", "{}")]
    [InlineData("", "1")]
    public async Task BadOrUnknownClassificationFieldsAre400(string field, string value)
    {
        var body = new System.Text.Json.Nodes.JsonObject
        {
            ["image"] = Convert.ToBase64String(TestImages.Png()),
            [field] = System.Text.Json.Nodes.JsonNode.Parse(value),
        };
        var response = await _client.PostAsync(Classifications, Http.RawJson(body.ToJsonString()));
        await response.AssertProblemAsync(HttpStatusCode.BadRequest, field);
    }

    [Theory]
    [InlineData(Embeddings, "layer", "-1")]
    [InlineData(Embeddings, "layer", "3")]
    [InlineData(Embeddings, "layer", "2147483648")]
    [InlineData(Embeddings, "layer", "1.5")]
    [InlineData(Embeddings, "layer", "\"1\\u0000\"")]
    [InlineData(Embeddings, "layer", "[1]")]
    [InlineData(Embeddings, "top", "1")]
    [InlineData(Embeddings, "scale", "2")]
    [InlineData(Likelihoods, "scale", "0")]
    [InlineData(Likelihoods, "scale", "17")]
    [InlineData(Likelihoods, "scale", "\"NaN\"")]
    [InlineData(Likelihoods, "layer", "1")]
    [InlineData(Likelihoods, "__proto__", "{}")]
    public async Task BadOrUnknownAnalysisFieldsAre400(string route, string field, string value)
    {
        var body = new System.Text.Json.Nodes.JsonObject
        {
            ["image"] = Convert.ToBase64String(TestImages.Png()),
            [field] = System.Text.Json.Nodes.JsonNode.Parse(value),
        };
        await (await _client.PostAsync(route, Http.RawJson(body.ToJsonString()))).AssertProblemAsync(HttpStatusCode.BadRequest, field);
        // The multipart form reads the same fields the same way.
        var form = Http.Form(TestImages.Png(), (field, value.Trim('"').Replace("\\u0000", "\0")));
        await (await _client.PostAsync(route, form)).AssertProblemAsync(HttpStatusCode.BadRequest, field);
    }

    [Theory]
    [InlineData("..%2F..%2F..%2Fetc%2Fpasswd")]
    [InlineData("%2e%2e")]
    [InlineData("..%5C..%5Cwindows")]
    [InlineData("tiny-test%01")]
    [InlineData("tiny-test%2F..%2Ftiny-test")]
    [InlineData("TINY-TEST")]
    [InlineData("tiny%E2%80%AEtset")]
    [InlineData("%F0%9F%90%88")]
    [InlineData("%C3%A9")]
    [InlineData("%FF%FE")]
    [InlineData("%20")]
    [InlineData("models.json")]
    public async Task OddModelIdsAre404(string id)
    {
        await (await _client.GetAsync($"/v1/models/{id}")).AssertProblemAsync(HttpStatusCode.NotFound);
        await (await _client.PostAsync($"/v1/models/{id}/samples", Http.RawJson("{}"))).AssertProblemAsync(HttpStatusCode.NotFound);
        await (await _client.PostAsync($"/v1/models/{id}/completions", Http.Form(TestImages.Png()))).AssertProblemAsync(HttpStatusCode.NotFound);
        await (await _client.PostAsync($"/v1/models/{id}/classifications", Http.Form(TestImages.Png()))).AssertProblemAsync(HttpStatusCode.NotFound);
        await (await _client.PostAsync($"/v1/models/{id}/embeddings", Http.Form(TestImages.Png()))).AssertProblemAsync(HttpStatusCode.NotFound);
        await (await _client.PostAsync($"/v1/models/{id}/likelihoods", Http.Form(TestImages.Png()))).AssertProblemAsync(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task AVeryLongModelIdIs404()
    {
        var id = new string('a', 20_000);
        await (await _client.GetAsync($"/v1/models/{id}")).AssertProblemAsync(HttpStatusCode.NotFound);
        await (await _client.PostAsync($"/v1/models/{id}/samples", Http.RawJson("{}"))).AssertProblemAsync(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task PathTraversalDoesNotReachTheModelsFolder()
    {
        // "../" segments are resolved by the client or the router: what is left names no model, and no file is served.
        var response = await _client.GetAsync("/v1/models/../../v1/models/tiny-test/../../../appsettings.json");
        Assert.NotEqual(HttpStatusCode.OK, response.StatusCode);
        Assert.DoesNotContain("\"Inference\"", await response.Content.ReadAsStringAsync());
        var request = new HttpRequestMessage(HttpMethod.Get, "/v1/models/tiny-test/..%2F..%2Fmodel.json");
        await (await _client.SendAsync(request)).AssertProblemAsync(HttpStatusCode.NotFound);
    }

    private async Task AssertServedByReadingRoutes(byte[] image, string kind)
    {
        foreach (var route in ReadingRoutes)
        {
            var response = await _client.PostAsync(route, Http.Form(image));
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"{kind} on {route}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }
    }

    private static void AssertHalvesKept(System.Text.Json.Nodes.JsonObject answer, int rows, string kind, int tolerance = 0, int margin = 0)
    {
        var (width, _, pixels) = TestImages.ReadGrey(Convert.FromBase64String(Http.Images(answer)[0]));
        for (int y = 0; y < rows; y++)
        for (int x = 0; x < width; x++)
        {
            if (Math.Abs(x - width / 2 + 0.5) < margin + 0.5) continue;
            var p = pixels[y * width + x];
            if (x < width / 2) Assert.True(p <= tolerance, $"{kind}: pixel ({x}, {y}) is {p}, not black");
            else Assert.True(p >= 255 - tolerance, $"{kind}: pixel ({x}, {y}) is {p}, not white");
        }
    }

    private static HttpContent Empty(string? contentType)
    {
        var content = new ByteArrayContent([]);
        if (contentType is not null) content.Headers.TryAddWithoutValidation("Content-Type", contentType);
        return content;
    }
}
