namespace IGpt.Inference;
internal static class Placeholder;
