using Microsoft.Playwright;

namespace IGpt.Web.Tests;

/// <summary>The service with Api:Keys set: the page asks for a key when the API answers 401.</summary>
public sealed class KeyedBrowser : Browser
{
    public const string Key = "web-test-key-5d1c9e7a3b";

    protected override WebServer CreateServer() => new(new Dictionary<string, string?> { ["Api:Keys:0"] = Key });
}

public sealed class ApiKeyPageTests(KeyedBrowser browser) : IClassFixture<KeyedBrowser>
{
    [Fact]
    public async Task The_key_field_appears_on_401_and_the_key_is_sent_and_kept_for_the_tab()
    {
        var web = await browser.OpenPageAsync(waitForModels: false);
        var page = web.Page;

        // No key yet: the model list answers 401 and the key card shows why.
        var keyError = page.Locator("#error-api-key");
        await keyError.WaitForAsync(new LocatorWaitForOptions { State = WaitForSelectorState.Visible });
        Assert.Contains("API key", await keyError.TextContentAsync());
        Assert.True(await page.IsVisibleAsync("#key-card"));
        Assert.True(await page.IsDisabledAsync("#model"));

        // A wrong key is refused and asked again.
        await page.FillAsync("#api-key", "not-the-key-000000000");
        await page.ClickAsync("#use-key");
        await page.WaitForFunctionAsync("() => document.getElementById('error-api-key').textContent.includes('not valid')");
        Assert.True(await page.IsDisabledAsync("#model"));

        // The right key (Enter works too): the models load, the card goes, a sample is drawn with the key.
        await page.FillAsync("#api-key", KeyedBrowser.Key);
        await page.PressAsync("#api-key", "Enter");
        await page.WaitForSelectorAsync("#model:not([disabled])");
        Assert.True(await page.IsHiddenAsync("#key-card"));
        Assert.Equal(KeyedBrowser.Key, await page.EvaluateAsync<string>("() => sessionStorage.getItem('igpt.apiKey')"));
        await page.FillAsync("#n", "1");
        await page.ClickAsync("#samples");
        await page.WaitForSelectorAsync("#results[data-state='done']");

        // Kept for the tab: a reload needs no key again.
        await page.ReloadAsync();
        await page.WaitForSelectorAsync("#model:not([disabled])");
        Assert.True(await page.IsHiddenAsync("#key-card"));
        Assert.DoesNotContain(web.Errors, e => !e.Contains("401", StringComparison.Ordinal));
    }
}
