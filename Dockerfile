# Multi-stage build: compile the release binary, then run it on a slim base as a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
COPY benches ./benches
COPY data ./data
RUN cargo build --release --locked --bin tandem

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home tandem
WORKDIR /app
COPY --from=build /src/target/release/tandem /usr/local/bin/tandem
COPY config ./config
COPY migrations ./migrations
USER tandem
ENV TANDEM_CONFIG_DIR=/app/config TANDEM_LOG_FORMAT=json TANDEM_ENV=production
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]
ENTRYPOINT ["tandem"]
CMD ["serve"]
