// The library's rooms see each other; a file's own `using` lines name only outside namespaces.
global using IGpt.Inference.Analysis;
global using IGpt.Inference.Engine;
global using IGpt.Inference.Engine.Cpu;
global using IGpt.Inference.Generation;
global using IGpt.Inference.Images;
global using IGpt.Inference.Packages;
