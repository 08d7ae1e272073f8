using Microsoft.OpenApi;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace IGpt.Api.OpenApi;

/// <summary>A description for each group of operations (the tags the endpoint groups set), shown as Swagger UI's section headings.</summary>
public sealed class TagDescriptionsFilter : IDocumentFilter
{
    private static readonly Dictionary<string, string> Descriptions = new()
    {
        ["Health"] = "Liveness and readiness for orchestrators; open even when the service has API keys.",
        ["Models"] = "The model packages the service found, ready or failed, with their geometry, palette and classes.",
        ["Generation"] = "Images drawn pixel by pixel: completions of a posted image, and unconditional samples.",
        ["Classification"] = "The model's classification head on a posted image.",
        ["Analysis"] = "What the model knows about a posted image: embeddings from its layers, and likelihoods with a surprise map "
            + "and an out-of-distribution score.",
    };

    public void Apply(OpenApiDocument document, DocumentFilterContext context)
    {
        foreach (var tag in document.Tags ?? new HashSet<OpenApiTag>())
        {
            if (tag.Name is { } name && Descriptions.TryGetValue(name, out var description)) tag.Description = description;
        }
    }
}
