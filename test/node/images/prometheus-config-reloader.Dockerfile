# localhost/prometheus-config-reloader:test, the Prometheus Operator's
# sidecar (it renders the configuration and tells Prometheus to reload): the
# static binary test/node/build-tools built from the operator's Go module, at
# the path the operator's pod template runs.
FROM scratch
COPY prometheus-config-reloader /bin/prometheus-config-reloader
USER 65534:65534
ENTRYPOINT ["/bin/prometheus-config-reloader"]
