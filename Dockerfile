# The ledger binary on a small base image. compose.yaml builds and runs it next to PostgreSQL.
# The Go release go.mod names on its `go` line: the image sets GOTOOLCHAIN=local, so an older
# release would refuse to build, and a floating tag would build with whatever it points to.
FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/ledger ./cmd/ledger && mkdir -p /out/keys

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ledger /ledger
# Generated token keys live here (a volume in compose.yaml), writable by the nonroot user.
COPY --from=build --chown=65532:65532 /out/keys /keys
EXPOSE 8080
ENTRYPOINT ["/ledger"]
CMD ["serve"]
