namespace IGpt.Inference.Generation;

/// <summary>Told about every decode step (metrics); called on the scheduler's thread, so it must be quick.</summary>
public interface IDecodeObserver
{
    void OnDecodeStep(string modelId, int rows, TimeSpan elapsed);
}
