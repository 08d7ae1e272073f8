using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.Playwright;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using Xunit.Abstractions;

namespace IGpt.Web.Tests;

/// <summary>The web page at / in a real browser, against the real service and the tiny test model.</summary>
public sealed class WebPageTests(Browser browser, ITestOutputHelper output) : IClassFixture<Browser>
{
    private static readonly int Height = WebServer.Height;
    private static readonly int Width = WebServer.Width;

    [Fact]
    public async Task Page_and_its_modules_come_from_the_service_alone()
    {
        var web = await browser.OpenPageAsync();

        Assert.All(web.Requests, url => Assert.StartsWith(browser.Server.BaseAddress.ToString(), url));
        Assert.Contains(web.Requests, url => url.EndsWith("/app.js", StringComparison.Ordinal));
        // Only ready models are offered.
        var options = await web.Page.EvalOnSelectorAllAsync<string[]>("#model option", "os => os.map(o => o.value)");
        Assert.Equal([WebServer.Model], options);
        Assert.Contains("8×8", await web.Page.TextContentAsync("#model-info"));
        // The sampling fields start at the model's defaults (GET /v1/models' `sampling`), not the service's 1, 0, 1.
        Assert.Equal(WebServer.Sampling, (await web.Page.InputValueAsync("#temperature"), await web.Page.InputValueAsync("#top_k"),
            await web.Page.InputValueAsync("#top_p")));

        using var client = new HttpClient { BaseAddress = browser.Server.BaseAddress };
        var script = await client.GetAsync("/app.js");
        Assert.True(script.IsSuccessStatusCode);
        Assert.Equal("text/javascript", script.Content.Headers.ContentType?.MediaType);
        Assert.True((await client.GetAsync("/swagger/index.html")).IsSuccessStatusCode);
        Assert.Empty(web.Errors);
    }

    [Fact]
    public async Task Completion_streams_rows_then_shows_the_quantized_prompt_and_the_result()
    {
        var web = await browser.OpenPageAsync();
        var page = web.Page;
        var (png, quantized) = TestImage();
        await page.SetInputFilesAsync("#upload", new FilePayload { Name = "input.png", MimeType = "image/png", Buffer = png });
        await page.WaitForFunctionAsync("() => document.getElementById('source-info').textContent.includes('input.png')");

        // Keyboard only: the slider from 4 (half) to 3 rows, then Enter in a field submits.
        await page.FocusAsync("#rows");
        await page.Keyboard.PressAsync("ArrowLeft");
        Assert.Equal("3", await page.InputValueAsync("#rows"));
        const int rows = 3;
        await page.FillAsync("#n", "2");
        await page.FillAsync("#seed", "42");
        await RecordDrawnRowsAsync(page);
        await page.FocusAsync("#seed");
        await page.Keyboard.PressAsync("Enter");
        await page.WaitForSelectorAsync("#results[data-state='done']");

        // Every generated row of every image arrived as a `row` event and was drawn.
        Assert.Equal(2 * (Height - rows), int.Parse((await page.GetAttributeAsync("#results", "data-rows-received"))!));
        Assert.Contains("seed 42", await page.TextContentAsync("#status"));
        var canvases = await ReadCanvasesAsync(page);
        Assert.Equal(2, canvases.Length);
        foreach (var canvas in canvases)
        {
            for (var i = 0; i < rows * Width; i++) Assert.Equal(quantized[i], canvas[i]);
            Assert.All(canvas, value => Assert.Contains(value, WebServer.Palette));
        }

        // Each streamed row was drawn into its sample's canvas, at its row, with the pixels the result has there.
        var drawn = await page.EvaluateAsync<DrawnRow[]>("() => window.drawnRows");
        Assert.Equal(2 * (Height - rows), drawn.Length);
        Assert.Equal(
            [.. Enumerable.Range(0, 2).SelectMany(sample => Enumerable.Range(rows, Height - rows).Select(row => (sample, row)))],
            drawn.Select(d => (d.Sample, d.Y)).Order().ToArray());
        foreach (var row in drawn)
        {
            var grey = row.Pixels.Where((_, i) => i % 4 == 0);
            Assert.Equal(canvases[row.Sample].Skip(row.Y * Width).Take(Width), grey);
        }

        // The same images as the service's JSON answer for the same image and seed.
        using var form = new MultipartFormDataContent
        {
            { new ByteArrayContent(png) { Headers = { ContentType = new MediaTypeHeaderValue("image/png") } }, "image", "input.png" },
            { new StringContent("3"), "rows" }, { new StringContent("2"), "n" }, { new StringContent("42"), "seed" },
        };
        var expected = await PostForImagesAsync($"/v1/models/{WebServer.Model}/completions", form);
        Assert.Equal(expected, canvases);

        // Classify the same image, then keep a screenshot of the whole page.
        await page.ClickAsync("#classify");
        await page.WaitForSelectorAsync("#bars[data-state='done']");
        await SaveScreenshotAsync(page, "web-page.png");
        Assert.Empty(web.Errors);
    }

    [Fact]
    public async Task A_first_visitor_completes_an_example_in_two_clicks_and_sees_it_beside_the_completions()
    {
        var web = await browser.OpenPageAsync();
        var page = web.Page;
        var examples = page.Locator("#examples .example");
        await examples.First.WaitForAsync();
        Assert.Equal(WebServer.Examples.Select(e => e.Name), await examples.EvaluateAllAsync<string[]>("bs => bs.map(b => b.dataset.name)"));
        Assert.Equal(["dark", "light"], await examples.AllInnerTextsAsync());   // the classes the names end with
        Assert.True(await page.IsHiddenAsync("#original"));

        // The two clicks: an example, then Complete (every field at its default).
        var example = WebServer.Examples[1];
        await examples.Nth(1).ClickAsync();
        await page.WaitForSelectorAsync("#examples .example[aria-pressed='true']");
        await page.ClickAsync("#complete");
        await page.WaitForSelectorAsync("#results[data-state='done']");

        // The original beside the completions: the example's own pixels, all rows, not quantized.
        Assert.True(await page.IsVisibleAsync("#original"));
        Assert.Equal(example.Pixels, await ReadGreyAsync(page, "#original-image"));
        // The completions (n = 4 and half the rows kept, the page's defaults) keep the example's top rows, quantized,
        // and are the service's answer for the example and the seed the page shows.
        var rows = Height / 2;
        var canvases = await ReadCanvasesAsync(page);
        Assert.Equal(4, canvases.Length);
        Assert.All(canvases, canvas => Assert.Equal(example.Quantized[..(rows * Width)], canvas[..(rows * Width)]));
        var seed = (await page.GetAttributeAsync("#results", "data-seed"))!;
        using var form = new MultipartFormDataContent
        {
            { new ByteArrayContent(example.Png) { Headers = { ContentType = new MediaTypeHeaderValue("image/png") } }, "image", "example.png" },
            { new StringContent(rows.ToString()), "rows" }, { new StringContent("4"), "n" }, { new StringContent(seed), "seed" },
        };
        Assert.Equal(await PostForImagesAsync($"/v1/models/{WebServer.Model}/completions", form), canvases);
        await SaveScreenshotAsync(page, "web-page-example.png");

        // Drawing over it makes the drawing the image: no example is marked any more.
        var box = (await page.Locator("#drawing").BoundingBoxAsync())!;
        await page.Mouse.ClickAsync(box.X + box.Width / 2, box.Y + box.Height / 2);
        await page.WaitForFunctionAsync("() => document.getElementById('source-info').textContent.includes('drawing')");
        Assert.Equal(0, await page.Locator("#examples .example[aria-pressed='true']").CountAsync());
        Assert.Empty(web.Errors);
    }

    [Fact]
    public async Task Unconditional_samples_stream_into_one_canvas_each()
    {
        var web = await browser.OpenPageAsync();
        var page = web.Page;
        await page.FillAsync("#n", "3");
        await page.FillAsync("#seed", "7");
        await page.ClickAsync("#samples");
        await page.WaitForSelectorAsync("#results[data-state='done']");

        Assert.Equal("samples", await page.GetAttributeAsync("#results", "data-kind"));
        Assert.True(await page.IsHiddenAsync("#original"));  // samples have no original
        Assert.Equal(3 * Height, int.Parse((await page.GetAttributeAsync("#results", "data-rows-received"))!));
        var canvases = await ReadCanvasesAsync(page);
        Assert.Equal(3, canvases.Length);
        Assert.All(canvases, canvas => Assert.All(canvas, value => Assert.Contains(value, WebServer.Palette)));

        using var form = new MultipartFormDataContent { { new StringContent("3"), "n" }, { new StringContent("7"), "seed" } };
        Assert.Equal(await PostForImagesAsync($"/v1/models/{WebServer.Model}/samples", form), canvases);
        Assert.Empty(web.Errors);
    }

    [Fact]
    public async Task Classify_shows_a_bar_per_class_for_an_upload_and_for_a_drawing()
    {
        var web = await browser.OpenPageAsync();
        var page = web.Page;
        var (png, _) = TestImage();
        await page.SetInputFilesAsync("#upload", new FilePayload { Name = "input.png", MimeType = "image/png", Buffer = png });
        await page.WaitForFunctionAsync("() => document.getElementById('source-info').textContent.includes('input.png')");
        await page.ClickAsync("#classify");
        await page.WaitForSelectorAsync("#bars[data-state='done']");

        var bars = await ReadBarsAsync(page);
        Assert.Equal(WebServer.Classes.Order(), bars.Select(b => b.Label).Order());
        Assert.Equal(1.0, bars.Sum(b => b.Probability), 3);
        Assert.Equal(bars.OrderByDescending(b => b.Probability).Select(b => b.Label), bars.Select(b => b.Label));
        using (var form = new MultipartFormDataContent
        {
            { new ByteArrayContent(png) { Headers = { ContentType = new MediaTypeHeaderValue("image/png") } }, "image", "input.png" },
        })
        {
            using var client = new HttpClient { BaseAddress = browser.Server.BaseAddress };
            var answer = await client.PostAsync($"/v1/models/{WebServer.Model}/classifications", form);
            using var json = JsonDocument.Parse(await answer.Content.ReadAsStringAsync());
            var first = json.RootElement.GetProperty("predictions")[0];
            Assert.Equal(first.GetProperty("label").GetString(), bars[0].Label);
            Assert.Equal(first.GetProperty("probability").GetDouble(), bars[0].Probability, 6);
        }

        // A stroke with the mouse: the drawing becomes the image, the preview shows it, and it can be classified.
        var box = (await page.Locator("#drawing").BoundingBoxAsync())!;
        await page.Mouse.MoveAsync(box.X + box.Width * 0.2f, box.Y + box.Height * 0.5f);
        await page.Mouse.DownAsync();
        await page.Mouse.MoveAsync(box.X + box.Width * 0.8f, box.Y + box.Height * 0.5f, new MouseMoveOptions { Steps = 8 });
        await page.Mouse.UpAsync();
        await page.WaitForFunctionAsync("() => document.getElementById('source-info').textContent.includes('drawing')");
        var preview = await page.EvaluateAsync<int[]>(
            "() => { const c = document.getElementById('preview'); return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }");
        Assert.Contains(preview, value => value is > 0 and < 255);
        await page.ClickAsync("#classify");
        await page.WaitForSelectorAsync("#bars[data-state='done']");
        Assert.Equal(WebServer.Classes.Length, (await ReadBarsAsync(page)).Length);
        Assert.Empty(web.Errors);
    }

    [Fact]
    public async Task Classify_and_score_shows_the_surprise_map_and_the_verdict_in_words()
    {
        var web = await browser.OpenPageAsync();
        var page = web.Page;
        Assert.True(await page.IsHiddenAsync("#surprise"));
        var (png, _) = TestImage();
        await page.SetInputFilesAsync("#upload", new FilePayload { Name = "input.png", MimeType = "image/png", Buffer = png });
        await page.WaitForFunctionAsync("() => document.getElementById('source-info').textContent.includes('input.png')");
        await page.ClickAsync("#classify");
        await page.WaitForSelectorAsync("#surprise[data-state='done']");
        await page.WaitForSelectorAsync("#bars[data-state='done']");
        await page.WaitForFunctionAsync("() => { const i = document.getElementById('surprise-map'); return i.complete && i.naturalWidth > 0; }");

        Assert.True(await page.IsVisibleAsync("#surprise"));
        // The web server's calibration puts every score of the tiny model above the test images' 0.99 quantile.
        Assert.Equal("This image looks unlike the training images to the model.", await page.TextContentAsync("#surprise-verdict"));
        var detail = await page.TextContentAsync("#surprise-detail");
        Assert.Contains("bits per pixel", detail);

        // The page shows what the API answers for the same image: the score and, pixel for pixel, the map.
        using var client = new HttpClient { BaseAddress = browser.Server.BaseAddress };
        HttpContent Form() => new MultipartFormDataContent
        {
            { new ByteArrayContent(png) { Headers = { ContentType = new MediaTypeHeaderValue("image/png") } }, "image", "input.png" },
        };
        using (var json = JsonDocument.Parse(await (await client.PostAsync($"/v1/models/{WebServer.Model}/likelihoods", Form())).Content.ReadAsStringAsync()))
        {
            var score = json.RootElement.GetProperty("ood_score").GetDouble();
            Assert.Equal(score, double.Parse((await page.GetAttributeAsync("#surprise", "data-ood"))!, System.Globalization.CultureInfo.InvariantCulture), 9);
            Assert.Contains(score.ToString("0.00", System.Globalization.CultureInfo.InvariantCulture), detail);
        }
        var request = new HttpRequestMessage(HttpMethod.Post, $"/v1/models/{WebServer.Model}/likelihoods") { Content = Form() };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("image/png"));
        using var map = Image.Load<Rgb24>(await (await client.SendAsync(request)).Content.ReadAsByteArrayAsync());
        Assert.Equal((Width, Height), (map.Width, map.Height));
        var shown = await page.EvaluateAsync<int[]>(
            "() => { const i = document.getElementById('surprise-map'); const c = document.createElement('canvas'); c.width = i.naturalWidth; "
            + "c.height = i.naturalHeight; const x = c.getContext('2d'); x.drawImage(i, 0, 0); return Array.from(x.getImageData(0, 0, c.width, c.height).data); }");
        Assert.Equal(Width * Height * 4, shown.Length);
        for (var y = 0; y < Height; y++)
        {
            for (var x = 0; x < Width; x++)
            {
                var i = 4 * (y * Width + x);
                Assert.Equal((map[x, y].R, map[x, y].G, map[x, y].B), ((byte)shown[i], (byte)shown[i + 1], (byte)shown[i + 2]));
            }
        }
        // Brighter means more surprising: the map is not one flat colour for an image the model has never seen.
        Assert.True(Enumerable.Range(0, Width * Height).Select(p => shown[4 * p]).Distinct().Count() > 1);
        Assert.Empty(web.Errors);
    }

    [Fact]
    public async Task An_out_of_range_field_shows_the_service_message_next_to_it()
    {
        var web = await browser.OpenPageAsync();
        var page = web.Page;
        await page.FillAsync("#n", "99");
        await page.ClickAsync("#samples");

        var fieldError = page.Locator("#error-n");
        await fieldError.WaitForAsync(new LocatorWaitForOptions { State = WaitForSelectorState.Visible });
        var message = await fieldError.TextContentAsync();
        Assert.Contains("'n'", message);
        Assert.Contains("16", message);
        Assert.True(await page.EvaluateAsync<bool>(
            "() => document.getElementById('error-n').closest('.field').contains(document.getElementById('n'))"));
        Assert.Equal("true", await page.GetAttributeAsync("#n", "aria-invalid"));
        Assert.Contains("error-n", await page.GetAttributeAsync("#n", "aria-describedby"));
        Assert.True(await page.IsVisibleAsync("#error-samples"));
        Assert.Equal("error", await page.GetAttributeAsync("#results", "data-state"));

        await SaveScreenshotAsync(page, "web-page-error.png");

        // Fixing the field clears its message.
        await page.FillAsync("#n", "1");
        Assert.True(await page.IsHiddenAsync("#error-n"));
    }

    /// <summary>A full-page screenshot kept as a test artifact (bin/.../artifacts/), its path in the test output.</summary>
    private async Task SaveScreenshotAsync(IPage page, string name)
    {
        var path = Path.Combine(AppContext.BaseDirectory, "artifacts", name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = path, FullPage = true });
        output.WriteLine($"screenshot: {path}");
        Assert.True(new FileInfo(path).Length > 0);
    }

    /// <summary>One putImageData call on a result canvas: a streamed row drawn.</summary>
    private sealed class DrawnRow
    {
        public int Sample { get; set; }

        public int Y { get; set; }

        public int[] Pixels { get; set; } = [];
    }

    /// <summary>Records every row the page draws into a result canvas (test instrumentation, not the page's).</summary>
    private static Task RecordDrawnRowsAsync(IPage page) => page.EvaluateAsync("""
        () => {
          window.drawnRows = [];
          const put = CanvasRenderingContext2D.prototype.putImageData;
          CanvasRenderingContext2D.prototype.putImageData = function (image, x, y, ...rest) {
            if (this.canvas.closest('#results')) {
              window.drawnRows.push({ Sample: Number(this.canvas.dataset.sample), Y: y, Pixels: Array.from(image.data) });
            }
            return put.call(this, image, x, y, ...rest);
          };
        }
        """);

    /// <summary>An 8x8 grey PNG of palette levels plus noise (under half a palette step), and its quantized pixels.</summary>
    private static (byte[] Png, int[] Quantized) TestImage()
    {
        var random = new Random(5);
        var palette = WebServer.Palette;
        var quantized = new int[Width * Height];
        using var image = new Image<L8>(Width, Height);
        for (var y = 0; y < Height; y++)
        {
            for (var x = 0; x < Width; x++)
            {
                var level = palette[random.Next(palette.Length)];
                image[x, y] = new L8((byte)Math.Clamp(level + random.Next(-8, 9), 0, 255));
                quantized[y * Width + x] = level;
            }
        }
        using var stream = new MemoryStream();
        image.SaveAsPng(stream);
        return (stream.ToArray(), quantized);
    }

    /// <summary>The grey value of each pixel of one canvas (checking that it is opaque grey).</summary>
    private static async Task<int[]> ReadGreyAsync(IPage page, string selector)
    {
        var data = await page.EvalOnSelectorAsync<int[]>(selector, "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)");
        return ToGrey(data);
    }

    /// <summary>The grey value of each pixel of each result canvas (checking that the canvases are opaque grey).</summary>
    private static async Task<int[][]> ReadCanvasesAsync(IPage page)
    {
        var rgba = await page.EvaluateAsync<int[][]>(
            "() => Array.from(document.querySelectorAll('#results canvas'), c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data))");
        return [.. rgba.Select(ToGrey)];
    }

    private static int[] ToGrey(int[] rgba)
    {
        Assert.Equal(Width * Height * 4, rgba.Length);
        var grey = new int[Width * Height];
        for (var i = 0; i < grey.Length; i++)
        {
            Assert.Equal(rgba[4 * i], rgba[4 * i + 1]);
            Assert.Equal(rgba[4 * i], rgba[4 * i + 2]);
            Assert.Equal(255, rgba[4 * i + 3]);
            grey[i] = rgba[4 * i];
        }
        return grey;
    }

    private sealed record Bar(string Label, double Probability);

    private static async Task<Bar[]> ReadBarsAsync(IPage page)
    {
        var items = await page.EvalOnSelectorAllAsync<string[][]>(
            "#bars li", "lis => lis.map(li => [li.querySelector('.label').textContent, li.dataset.probability, li.querySelector('.value').textContent])");
        return [.. items.Select(item =>
        {
            var probability = double.Parse(item[1], System.Globalization.CultureInfo.InvariantCulture);
            Assert.EndsWith("%", item[2]);
            return new Bar(item[0], probability);
        })];
    }

    /// <summary>The service's JSON answer's images, as grey values.</summary>
    private async Task<int[][]> PostForImagesAsync(string path, HttpContent content)
    {
        using var client = new HttpClient { BaseAddress = browser.Server.BaseAddress };
        var response = await client.PostAsync(path, content);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, body);
        using var json = JsonDocument.Parse(body);
        return [.. json.RootElement.GetProperty("images").EnumerateArray().Select(image =>
        {
            using var png = Image.Load<L8>(Convert.FromBase64String(image.GetString()!));
            var grey = new int[png.Width * png.Height];
            for (var y = 0; y < png.Height; y++)
            {
                for (var x = 0; x < png.Width; x++) grey[y * png.Width + x] = png[x, y].PackedValue;
            }
            return grey;
        })];
    }
}
