# syntax=docker/dockerfile:1
# The IGpt service: ASP.NET Core 10 on NVIDIA CUDA 13 + cuDNN 9, which is what
# Microsoft.ML.OnnxRuntime.Gpu 1.31 loads (libcublasLt.so.13, libcudnn.so.9).
#
#   docker build -t igpt .
#   docker run --gpus all -p 8080:8080 igpt
#
# Without a GPU (or without --gpus) the same image serves on the CPU provider: the service falls
# back by itself and says why in its log and in /v1/models (provider_reason).
# docs/DEPLOY.md: other models (Inference__ModelsPath), configuration, scaling out.
# scripts/validate-container.sh checks the published app this image runs, without Docker.

# Pin these by digest (image:tag@sha256:...) in a release pipeline.
ARG SDK_IMAGE=mcr.microsoft.com/dotnet/sdk:10.0
ARG ASPNET_IMAGE=mcr.microsoft.com/dotnet/aspnet:10.0-noble
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---- build: publish the service (framework-dependent, linux-x64 native libraries only) ----
FROM ${SDK_IMAGE} AS build
WORKDIR /src
# Restore from the project files alone, so the restore layer is reused while only sources change.
COPY Directory.Build.props Directory.Packages.props ./
COPY src/IGpt.Inference/IGpt.Inference.csproj src/IGpt.Inference/
COPY src/IGpt.Api/IGpt.Api.csproj src/IGpt.Api/
RUN dotnet restore src/IGpt.Api/IGpt.Api.csproj -r linux-x64
COPY src/ src/
# -r linux-x64: ONNX Runtime's Linux libraries go next to the app. Microsoft.ML.OnnxRuntime.Gpu.Windows'
# props copy its native DLLs (onnxruntime*.dll, ~200 MB) into every x64/AnyCPU output whatever the RID,
# so they are deleted (the managed wrapper is Microsoft.ML.OnnxRuntime.dll, which the pattern leaves).
RUN dotnet publish src/IGpt.Api -c Release -r linux-x64 --self-contained false -p:UseAppHost=false \
        --no-restore -o /app \
    && find /app -maxdepth 1 -name 'onnxruntime*.dll' -delete

# ---- the ASP.NET Core 10 runtime, Microsoft's build for Ubuntu 24.04 (noble), same as the CUDA base ----
FROM ${ASPNET_IMAGE} AS aspnet

# ---- runtime: CUDA 13 + cuDNN 9 on Ubuntu 24.04, with the ASP.NET Core runtime added ----
FROM ${CUDA_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# .NET's native dependencies on Ubuntu 24.04 (learn.microsoft.com/dotnet/core/install/linux-ubuntu),
# and curl for the HEALTHCHECK. Versions float with the base image's Ubuntu security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates curl libc6 libgcc-s1 libgssapi-krb5-2 libicu74 libssl3t64 libstdc++6 tzdata zlib1g \
    && rm -rf /var/lib/apt/lists/*

COPY --from=aspnet /usr/share/dotnet /usr/share/dotnet
# The runtime must start here, and a non-root user with a fixed uid (Kubernetes runAsNonRoot checks the numeric USER).
RUN ln -s /usr/share/dotnet/dotnet /usr/bin/dotnet \
    && dotnet --list-runtimes | grep '^Microsoft.AspNetCore.App 10\.' \
    && groupadd --system --gid 10001 igpt \
    && useradd --system --uid 10001 --gid igpt --home-dir /home/igpt --create-home --shell /usr/sbin/nologin igpt

WORKDIR /app
# The service root in a published deployment is the content root (/app): it reads /app/appsettings.json
# and resolves the relative Inference:ModelsPath "models" to /app/models (src/IGpt.Api/Hosting/ServiceRoot.cs).
COPY --from=build /app ./
COPY appsettings.json ./
COPY models/ ./models/

# Listen on every interface (appsettings.json's Urls is localhost, for a developer's machine).
# NVIDIA_* make the NVIDIA container toolkit expose the GPU's compute libraries (the CUDA base sets them too).
# GLIBC_TUNABLES: glibc's malloc asks for 2 MiB pages (transparent huge pages) for the memory ONNX Runtime
# keeps its weights and KV cache in, as src/IGpt.Api/Properties/launchSettings.json does for `dotnet run`
# (CPU decode steps of weight-bound models 1.05-1.18x faster on the dev VM; docs/DEPLOY.md).
ENV ASPNETCORE_URLS=http://+:8080 \
    ASPNETCORE_ENVIRONMENT=Production \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
    DOTNET_RUNNING_IN_CONTAINER=true \
    DOTNET_NOLOGO=true \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER 10001:10001
EXPOSE 8080

# 200 while at least one model is ready ("ready" or "degraded"), 503 when none is. Model loading
# (a paper-size model on the GPU) can take a while: start-period covers it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/health/ready || exit 1

ENTRYPOINT ["dotnet", "IGpt.Api.dll"]
