namespace IGpt.Inference.Images;

/// <summary>An uploaded image that cannot be used; the subclass says why (the API maps each to a status code).</summary>
public abstract class ImageDecodeException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Not a PNG or JPEG (HTTP 415).</summary>
public sealed class UnsupportedImageFormatException(string message) : ImageDecodeException(message);

/// <summary>Bytes or dimensions above <see cref="ImageLimits"/> (HTTP 413).</summary>
public sealed class ImageTooLargeException(string message) : ImageDecodeException(message);

/// <summary>A PNG or JPEG that is truncated or corrupt (HTTP 400).</summary>
public sealed class InvalidImageException(string message, Exception? inner = null) : ImageDecodeException(message, inner);
