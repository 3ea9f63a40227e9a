# localhost/prometheus:test, the Prometheus that test/node's Prometheus
# Operator runs: only the static binary test/node/build-tools built from
# Prometheus's Go module (what the operator's StatefulSet needs: an
# entrypoint that takes its flags; it mounts the configuration and storage).
FROM scratch
COPY prometheus /bin/prometheus
USER 65534:65534
ENTRYPOINT ["/bin/prometheus"]
