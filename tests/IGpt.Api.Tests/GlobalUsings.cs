// The inference library's namespaces, one per folder of src/IGpt.Inference.
global using IGpt.Inference;
global using IGpt.Inference.Analysis;
global using IGpt.Inference.Generation;
global using IGpt.Inference.Images;
global using IGpt.Inference.Packages;
