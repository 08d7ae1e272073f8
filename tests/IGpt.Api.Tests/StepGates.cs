using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace IGpt.Api.Tests;

/// <summary>The service's <see cref="StepGate"/>: tests hold the decode loops to see requests queued and holding slots.</summary>
internal static class StepGates
{
    public static StepGate Gate(this WebApplicationFactory<Program> factory) => factory.Services.GetRequiredService<StepGate>();
}
