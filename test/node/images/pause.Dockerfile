# localhost/pause:test, the kubelet's sandbox image: only the static pause
# binary that `build` compiled from pause.c.
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
