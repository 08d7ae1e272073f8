using Microsoft.Playwright;

namespace IGpt.Web.Tests;

/// <summary>
/// The service (<see cref="WebServer"/>) and Debian's Chromium driven by Playwright, shared by the tests of a class.
/// No browser is downloaded: a missing /usr/bin/chromium fails every test with a message saying how to get it.
/// </summary>
public class Browser : IAsyncLifetime
{
    /// <summary>Debian's Chromium; IGPT_CHROMIUM names another build of it.</summary>
    public static string ChromiumPath { get; } = Environment.GetEnvironmentVariable("IGPT_CHROMIUM") is { Length: > 0 } path
        ? path
        : "/usr/bin/chromium";

    private IPlaywright? _playwright;
    private IBrowser? _browser;

    public WebServer Server { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        if (!File.Exists(ChromiumPath))
        {
            throw new InvalidOperationException(
                $"{ChromiumPath} is missing: the web page tests need Debian's Chromium. Install it with "
                + "`sudo apt-get install chromium` (./test.sh installs it when it is missing).");
        }
        Server = CreateServer();
        _playwright = await Playwright.CreateAsync();
        _browser = await _playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = ChromiumPath,
            Headless = true,
            // No sandbox (containers, root), no GPU, /tmp instead of a small /dev/shm; and no network of its own.
            Args =
            [
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--headless",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
            ],
        });
    }

    protected virtual WebServer CreateServer() => new();

    /// <summary>A fresh page (own context) on the service's web page, once the model list has loaded (unless told not to wait).</summary>
    public async Task<WebPage> OpenPageAsync(bool waitForModels = true)
    {
        var context = await _browser!.NewContextAsync(new BrowserNewContextOptions
        {
            BaseURL = Server.BaseAddress.ToString(),
            ViewportSize = new ViewportSize { Width = 1280, Height = 1000 },
        });
        context.SetDefaultTimeout(30_000);
        var page = await context.NewPageAsync();
        var web = new WebPage(page);
        page.Console += (_, message) =>
        {
            if (message.Type == "error") web.Errors.Add(message.Text);
        };
        page.PageError += (_, error) => web.Errors.Add(error);
        page.Request += (_, request) => web.Requests.Add(request.Url);
        await page.GotoAsync("/");
        if (waitForModels) await page.WaitForSelectorAsync("#model:not([disabled])");
        return web;
    }

    public async Task DisposeAsync()
    {
        if (_browser is not null) await _browser.DisposeAsync();
        _playwright?.Dispose();
        Server?.Dispose();
    }
}

/// <summary>A page, with the script errors and the requests it made.</summary>
public sealed record WebPage(IPage Page)
{
    public List<string> Errors { get; } = [];

    public List<string> Requests { get; } = [];
}
