using System.ComponentModel.DataAnnotations;
using System.Reflection;
using Microsoft.Extensions.Options;

namespace IGpt.Inference;

/// <summary>
/// Validates a settings class by its DataAnnotations, the one place its rules are written: every property's
/// validation attributes, then the class's own cross-setting rules (<see cref="IValidatableObject"/>). Each error
/// names the configuration key ("Inference:MaxBatch"). The service registers it for ValidateOnStart; the library
/// runs the same rules where it is given settings without a host (<see cref="ThrowIfInvalid"/>).
/// </summary>
public sealed class SettingsValidator<TOptions>(string section) : IValidateOptions<TOptions> where TOptions : class
{
    public ValidateOptionsResult Validate(string? name, TOptions options)
    {
        var errors = Errors(options, section);
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public static void ThrowIfInvalid(TOptions options, string section)
    {
        if (Errors(options, section) is [var first, ..]) throw new ArgumentException(first);
    }

    public static IReadOnlyList<string> Errors(TOptions options, string section)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        foreach (var property in typeof(TOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance))
        {
            if (!property.IsDefined(typeof(ValidationAttribute), inherit: true)) continue;
            var context = new ValidationContext(options) { MemberName = property.Name, DisplayName = $"{section}:{property.Name}" };
            var results = new List<ValidationResult>();
            if (!Validator.TryValidateProperty(property.GetValue(options), context, results))
                errors.AddRange(results.Select(r => r.ErrorMessage ?? $"{section}:{property.Name} is invalid."));
        }
        if (errors.Count == 0 && options is IValidatableObject rules)
            errors.AddRange(rules.Validate(new ValidationContext(options)).Select(r => r.ErrorMessage ?? $"{section} is invalid."));
        return errors;
    }
}
