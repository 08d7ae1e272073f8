using System.Net;
using System.Net.Http.Headers;
using System.Text;

namespace IGpt.Api.Tests;

/// <summary>Everything a client can get wrong gets a 4xx problem+json, never a 500.</summary>
[Collection(ApiCollection.Name)]
public sealed class ErrorTests(ApiFactory factory)
{
    private const string Completions = $"/v1/models/{ModelsFolder.Tiny}/completions";
    private const string Samples = $"/v1/models/{ModelsFolder.Tiny}/samples";
    private readonly HttpClient _client = factory.CreateClient();

    [Theory]
    [InlineData("n", "0")]
    [InlineData("n", "17")]
    [InlineData("n", "abc")]
    [InlineData("n", "2.5")]
    [InlineData("temperature", "-1")]
    [InlineData("temperature", "-0")]
    [InlineData("temperature", "NaN")]
    [InlineData("temperature", "warm")]
    [InlineData("top_k", "-1")]
    [InlineData("top_p", "0")]
    [InlineData("top_p", "1.5")]
    [InlineData("scale", "0")]
    [InlineData("scale", "17")]
    [InlineData("seed", "-1")]
    [InlineData("seed", "9007199254740992")]
    [InlineData("seed", "18446744073709551616")]
    [InlineData("rows", "0")]
    [InlineData("rows", "8")]
    [InlineData("rows", "x")]
    [InlineData("partial", "maybe")]
    [InlineData("colour", "red")]
    public async Task BadCompletionFieldIs400NamingTheField(string field, string value)
    {
        var response = await _client.PostAsync(Completions, Http.Form(TestImages.Png(), (field, value)));
        await response.AssertProblemAsync(HttpStatusCode.BadRequest, field);
    }

    [Theory]
    [InlineData("""{"n": 0}""", "n")]
    [InlineData("""{"n": 17}""", "n")]
    [InlineData("""{"n": "many"}""", "n")]
    [InlineData("""{"n": [1]}""", "n")]
    [InlineData("""{"temperature": -0.5}""", "temperature")]
    [InlineData("""{"top_p": 0}""", "top_p")]
    [InlineData("""{"top_p": 1.01}""", "top_p")]
    [InlineData("""{"scale": 17}""", "scale")]
    [InlineData("""{"seed": -5}""", "seed")]
    [InlineData("""{"rows": 4}""", "rows")]
    public async Task BadSampleFieldIs400NamingTheField(string json, string field)
    {
        var response = await _client.PostAsync(Samples, Http.RawJson(json));
        await response.AssertProblemAsync(HttpStatusCode.BadRequest, field);
    }

    [Fact]
    public async Task MalformedJsonIs400()
    {
        await (await _client.PostAsync(Samples, Http.RawJson("{\"n\": "))).AssertProblemAsync(HttpStatusCode.BadRequest);
        await (await _client.PostAsync(Samples, Http.RawJson("[1, 2]"))).AssertProblemAsync(HttpStatusCode.BadRequest);
    }

    [Fact]
    public async Task MissingImageIs400()
    {
        await (await _client.PostAsync(Completions, Http.Form(null, ("n", "1")))).AssertProblemAsync(HttpStatusCode.BadRequest, "image");
        await (await _client.PostAsync(Completions, Http.Json(new { n = 1 }))).AssertProblemAsync(HttpStatusCode.BadRequest, "image");
    }

    [Fact]
    public async Task InvalidBase64Is400()
    {
        var response = await _client.PostAsync(Completions, Http.Json(new { image = "this is not base64!" }));
        await response.AssertProblemAsync(HttpStatusCode.BadRequest, "image");
        response = await _client.PostAsync(Completions, Http.Json(new { image = 12 }));
        await response.AssertProblemAsync(HttpStatusCode.BadRequest, "image");
    }

    [Fact]
    public async Task UndecodableImageIs400()
    {
        var response = await _client.PostAsync(Completions, Http.Form(TestImages.TruncatedPng()));
        await response.AssertProblemAsync(HttpStatusCode.BadRequest, "image");
        response = await _client.PostAsync(Completions, Http.Json(new { image = Convert.ToBase64String(TestImages.TruncatedPng()) }));
        await response.AssertProblemAsync(HttpStatusCode.BadRequest, "image");
    }

    [Fact]
    public async Task GifAndBmpAre415()
    {
        await (await _client.PostAsync(Completions, Http.Form(TestImages.Gif()))).AssertProblemAsync(HttpStatusCode.UnsupportedMediaType, "image");
        await (await _client.PostAsync(Completions, Http.Form(TestImages.Bmp()))).AssertProblemAsync(HttpStatusCode.UnsupportedMediaType, "image");
        var json = Http.Json(new { image = Convert.ToBase64String(TestImages.Bmp()) });
        await (await _client.PostAsync(Completions, json)).AssertProblemAsync(HttpStatusCode.UnsupportedMediaType, "image");
    }

    [Fact]
    public async Task WrongRequestContentTypeIs415()
    {
        var text = new StringContent("n=1", Encoding.UTF8, "text/plain");
        await (await _client.PostAsync(Completions, text)).AssertProblemAsync(HttpStatusCode.UnsupportedMediaType);
        var png = new ByteArrayContent(TestImages.Png());
        png.Headers.ContentType = new MediaTypeHeaderValue("image/png");
        await (await _client.PostAsync(Completions, png)).AssertProblemAsync(HttpStatusCode.UnsupportedMediaType);
        var untyped = new ByteArrayContent(TestImages.Png());
        await (await _client.PostAsync(Completions, untyped)).AssertProblemAsync(HttpStatusCode.UnsupportedMediaType);
        var xml = new StringContent("<n>1</n>", Encoding.UTF8, "application/xml");
        await (await _client.PostAsync(Samples, xml)).AssertProblemAsync(HttpStatusCode.UnsupportedMediaType);
    }

    [Fact]
    public async Task BodyOverTheRequestLimitIs413()
    {
        var big = new byte[ApiFactory.MaxRequestBytes + 1024];
        await (await _client.PostAsync(Completions, Http.Form(big))).AssertProblemAsync(HttpStatusCode.RequestEntityTooLarge);
        var json = Http.Json(new { image = Convert.ToBase64String(big) });
        await (await _client.PostAsync(Completions, json)).AssertProblemAsync(HttpStatusCode.RequestEntityTooLarge);
    }

    [Fact]
    public async Task ChunkedBodyOverTheRequestLimitIs413()
    {
        // No Content-Length: the limit is found while reading.
        var content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes("{\"n\": 1, \"pad\": \"" + new string('x', (int)ApiFactory.MaxRequestBytes) + "\"}")));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        var request = new HttpRequestMessage(HttpMethod.Post, Samples) { Content = content };
        request.Headers.TransferEncodingChunked = true;
        await (await _client.SendAsync(request)).AssertProblemAsync(HttpStatusCode.RequestEntityTooLarge);
    }

    [Fact]
    public async Task ImageOverTheImageLimitIs413()
    {
        var image = TestImages.NoisePng((int)ApiFactory.MaxImageBytes + 1000);
        Assert.InRange(image.Length, ApiFactory.MaxImageBytes + 1, ApiFactory.MaxRequestBytes - 4096);
        await (await _client.PostAsync(Completions, Http.Form(image))).AssertProblemAsync(HttpStatusCode.RequestEntityTooLarge, "image");
    }

    [Fact]
    public async Task ImageOverTheDimensionLimitIs413()
    {
        var wide = TestImages.Png(4097, 1);
        await (await _client.PostAsync(Completions, Http.Form(wide))).AssertProblemAsync(HttpStatusCode.RequestEntityTooLarge, "image");
    }

    [Theory]
    [InlineData("multipart/form-data", "--x\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n1")]
    [InlineData("multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n1")]
    [InlineData("multipart/form-data; boundary=x", "garbage without any boundary")]
    [InlineData("application/json", "{\"image\": \"")]
    public async Task MalformedBodiesAre400(string contentType, string body)
    {
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(body));
        content.Headers.TryAddWithoutValidation("Content-Type", contentType);
        await (await _client.PostAsync(Completions, content)).AssertProblemAsync(HttpStatusCode.BadRequest);
    }

    [Fact]
    public async Task ErrorsAreProblemJsonEvenWhenAPngIsAsked()
    {
        var request = new HttpRequestMessage(HttpMethod.Post, Completions) { Content = Http.Form(TestImages.Png(), ("n", "0")) };
        request.Headers.Accept.ParseAdd("image/png");
        await (await _client.SendAsync(request)).AssertProblemAsync(HttpStatusCode.BadRequest, "n");
    }

    [Fact]
    public async Task UrlEncodedFormWithBase64ImageWorks()
    {
        var form = new FormUrlEncodedContent([new("image", Convert.ToBase64String(TestImages.Png())), new("seed", "3")]);
        var response = await _client.PostAsync(Completions, form);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task UnknownRouteAndWrongMethodAreProblems()
    {
        await (await _client.GetAsync("/v1/nothing-here")).AssertProblemAsync(HttpStatusCode.NotFound);
        await (await _client.GetAsync(Completions)).AssertProblemAsync(HttpStatusCode.MethodNotAllowed);
    }

    [Fact]
    public async Task DuplicateFieldIs400()
    {
        var response = await _client.PostAsync(Completions, Http.Form(TestImages.Png(), ("n", "1"), ("n", "2")));
        await response.AssertProblemAsync(HttpStatusCode.BadRequest, "n");
    }
}
