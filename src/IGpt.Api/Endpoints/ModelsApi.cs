using IGpt.Api.Catalog;
using IGpt.Api.Contracts;
using IGpt.Api.Errors;
using Microsoft.AspNetCore.Http.HttpResults;

namespace IGpt.Api.Endpoints;

/// <summary>GET /v1/models, /v1/models/{model} and /v1/models/{model}/examples: what is served.</summary>
public static class ModelsApi
{
    public static IEndpointRouteBuilder MapModelsApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/models").WithTags("Models");
        group.MapGet("", ListModels)
            .WithName("ListModels")
            .WithSummary("List the models")
            .WithDescription("Every package under the models folder, with its status (failed packages are listed with the reason) and, "
                + "as for one model, its default sampling settings.");
        group.MapGet("/{model}", GetModel)
            .WithName("GetModel")
            .WithSummary("Describe one model")
            .WithDescription("The package's geometry, palette size, classes, execution provider, default sampling settings (`sampling`: what "
                + "completions and samples use for temperature, top_k and top_p when a request leaves them out) and measured quality; "
                + "404 when there is no such package.")
            .ProducesProblem(StatusCodes.Status404NotFound);
        group.MapGet("/{model}/examples", ListExamples)
            .WithName("ListModelExamples")
            .WithSummary("List a model's example images")
            .WithDescription("Test-split images shipped with the model's package (its optional `examples/` folder), as base64 PNGs "
                + "to post as they are to completions or classifications; empty when the package ships none. The web page shows them as thumbnails.")
            .ProducesProblem(StatusCodes.Status404NotFound);
        return app;
    }

    /// <summary>List the models.</summary>
    public static Ok<ModelListResponse> ListModels(ModelCatalog catalog, CancellationToken cancellationToken) =>
        TypedResults.Ok(new ModelListResponse { Models = catalog.Models });

    /// <summary>Describe one model.</summary>
    /// <param name="model">Model id.</param>
    public static Results<Ok<ModelResponse>, ProblemHttpResult> GetModel(string model, ModelCatalog catalog, CancellationToken cancellationToken) =>
        catalog.Describe(model) is { } found
            ? TypedResults.Ok(found)
            : UnknownModel(model);

    /// <summary>List a model's example images.</summary>
    /// <param name="model">Model id.</param>
    public static Results<Ok<ModelExamplesResponse>, ProblemHttpResult> ListExamples(string model, ModelExamples examples, CancellationToken cancellationToken) =>
        examples.For(model) is { } found
            ? TypedResults.Ok(new ModelExamplesResponse { Model = model, Examples = found })
            : UnknownModel(model);

    private static ProblemHttpResult UnknownModel(string model) =>
        Problems.NotFound($"There is no model '{model}'. GET /v1/models lists the models.");
}
