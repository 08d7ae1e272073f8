using Serilog;

namespace IGpt.Api.Hosting;

public static class LoggingExtensions
{
    /// <summary>Serilog, configured from the "Serilog" section of appsettings.json (sinks, levels, enrichers).</summary>
    public static WebApplicationBuilder AddSerilogLogging(this WebApplicationBuilder builder)
    {
        var configuration = builder.Configuration;
        builder.Services.AddSerilog((services, logger) => logger
            .ReadFrom.Configuration(configuration)
            .ReadFrom.Services(services)
            .Enrich.FromLogContext());
        return builder;
    }
}
