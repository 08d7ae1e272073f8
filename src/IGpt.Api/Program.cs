using IGpt.Api.Endpoints;
using IGpt.Api.Errors;
using IGpt.Api.Hosting;
using IGpt.Api.OpenApi;
using IGpt.Api.Serving;
using IGpt.Api.Security;

var builder = WebApplication.CreateBuilder(args);
builder.AddServiceRootConfiguration(args);
builder.AddSerilogLogging();
builder.Services.AddApi();
builder.Services.AddProblemHandling();
builder.Services.AddApiSecurity();
builder.Services.AddInference();
builder.Services.AddServing();
builder.Services.AddApiDocumentation();

var app = builder.Build();
app.ValidateSettings();
app.UseExceptionHandler();
app.UseStatusCodePages();
app.UseRequestLogging();
app.UseShutdownDrain();
app.UseApiDocumentation();
app.UseWebClient();
app.UseApiSecurity();
app.MapHealthApi();
app.MapModelsApi();
app.MapGenerationApi();
app.MapClassificationApi();
app.MapAnalysisApi();
app.MapServingMetrics();
app.Run();

/// <summary>The entry point, public for WebApplicationFactory.</summary>
public partial class Program;
