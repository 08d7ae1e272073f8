using Serilog;

namespace IGpt.Api.Hosting;

public static class LoggingExtensions
{
    /// <summary>
    /// Serilog, configured from the "Serilog" section of appsettings.json (sinks, levels, enrichers), as this host's own
    /// logger: the static <see cref="Log.Logger"/> is left alone (preserveStaticLogger), so that two hosts in one process
    /// (a test run's) never take each other's events, and one disposed never silences another.
    /// </summary>
    public static WebApplicationBuilder AddSerilogLogging(this WebApplicationBuilder builder)
    {
        var configuration = builder.Configuration;
        builder.Services.AddSerilog((services, logger) => logger
            .ReadFrom.Configuration(configuration)
            .ReadFrom.Services(services)
            .Enrich.FromLogContext(), preserveStaticLogger: true);
        return builder;
    }

    /// <summary>
    /// One log line per request (method, path, status, time) through this host's logger. Serilog's middleware would write
    /// through the static logger otherwise, which <see cref="AddSerilogLogging"/> does not set.
    /// </summary>
    public static WebApplication UseRequestLogging(this WebApplication app)
    {
        var logger = app.Services.GetRequiredService<Serilog.ILogger>();
        app.UseSerilogRequestLogging(options => options.Logger = logger);
        return app;
    }
}
