# shroud's image for those who build with docker (or buildah, kaniko).
# The tested path is `go run ./cmd/shroud-image` (README, "Container
# image"), which builds the same layout without a daemon, reproducibly.
#
#   docker build --build-arg VERSION=v1.2.3 --build-arg REVISION=$(git rev-parse HEAD) \
#       --build-arg CREATED=$(date -u -d @$(git log -1 --format=%ct) +%FT%TZ) -t shroud .

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
# Without cgo: no PKCS#11 token identity in this build (README).
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags "-s -w -buildid=" -o /out/shroud ./cmd/shroud \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.title="shroud" \
      org.opencontainers.image.source="https://github.com/shroud-oci/shroud" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.created="$CREATED"
COPY --from=build /out/shroud /usr/local/bin/shroud
COPY --from=build --chown=65532:65532 --chmod=0700 /out/data /var/lib/shroud
USER 65532:65532
WORKDIR /var/lib/shroud
EXPOSE 5000/tcp
ENTRYPOINT ["/usr/local/bin/shroud"]
CMD ["serve", "--data-dir", "/var/lib/shroud"]
