# syntax=docker/dockerfile:1
#
# miitel-crm-sync: one static binary, subcommands receiver | worker | serve | ...
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t miitel-crm-sync .
#
# The go build line below uses exactly the Makefile's BUILD_FLAGS and BUILD_PKG, and GO_VERSION
# is go.mod's go line (major.minor): charts/test/dockerfile_test.go fails when they drift, and
# CI runs `make build`, so this build cannot rot unnoticed without a Docker engine in CI.

# major.minor of go.mod's `go` line; the newest patch release of that line is pulled.
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/miitel-crm-sync ./cmd/miitel-crm-sync

# distroless static: CA certificates (HTTPS to the CRMs) and tzdata (mappings format
# Asia/Tokyo times), no shell, no package manager; "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/miitel-crm-sync /miitel-crm-sync
USER 65532:65532
# 8080: receiver (webhooks, /healthz, /readyz, /metrics); 9090: worker (/healthz, /readyz, /metrics).
EXPOSE 8080 9090
ENTRYPOINT ["/miitel-crm-sync"]
CMD ["serve"]
