using System.Net;

namespace IGpt.Api.Tests;

/// <summary>Each host writes its request log lines through its own logger, whatever other hosts the process starts and stops.</summary>
[Collection(GuardedApiCollection.Name)]
public sealed class RequestLogTests(GuardedApiFactory factory)
{
    [Fact]
    public async Task AnotherHostStartingAndStoppingInTheProcessDoesNotTakeThisHostsRequestLog()
    {
        var client = factory.CreateClient(GuardedApiFactory.KeyOne);
        var marker = "/v1/models/log-" + Guid.NewGuid().ToString("N");
        // Serilog's request logging writes through the static logger unless given one, and each host that sets the static
        // logger at start closes it when disposed: a second host started (or stopped) after this one took its lines away.
        using (var other = new ApiFactory())
            Assert.Equal(HttpStatusCode.OK, (await other.CreateClient().GetAsync("/health/live")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync(marker)).StatusCode);
        Assert.True(await factory.Logs.WaitForAsync(text => text.Contains(marker) && text.Contains("responded 404")),
            "this host's request log line is not in its own log");
    }
}
