# syntax=docker/dockerfile:1
#
# The vchat image: the `vchat` binary alone (flow, executor, ping, bench,
# export), built in one stage and copied into a slim Debian in the next. The
# webcam client and its OpenCV are not in it: `-p vchat-cli` builds only the
# packages the `vchat` binary needs.
#
#   docker build -t registry.example.org/vchat:0.1.0 .
#   docker push registry.example.org/vchat:0.1.0
#   vchat export kubernetes flow.yml k8s/ --image registry.example.org/vchat:0.1.0

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p vchat-cli --bin vchat

FROM debian:bookworm-slim
# CA roots for executors reached over TLS; nothing else is needed at run time
# (rustls and ring are in the binary).
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home vchat
COPY --from=build /src/target/release/vchat /usr/local/bin/vchat
USER 10001
# The exported manifests run `vchat flow ...` or `vchat executor ...` with
# their configuration mounted at /etc/vchat, the working directory.
WORKDIR /etc/vchat
EXPOSE 8080
CMD ["vchat", "--help"]
