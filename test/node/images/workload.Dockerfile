# localhost/podmeter-workload:test: what the test pods run. python3 sends
# exact numbers of UDP/TCP bytes, iperf3 bulk TCP; iproute2 (ip addr, ss),
# iputils-ping, procps (ps) and netcat-openbsd are for looking around.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 iperf3 iproute2 iputils-ping procps netcat-openbsd \
 && rm -rf /var/lib/apt/lists/* \
 && python3 --version && iperf3 --version && ip -V
CMD ["sleep", "infinity"]
