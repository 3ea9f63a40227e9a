#!/bin/sh
# Runs inside the test node's VM at boot (podmeter-seed.service, from the
# read-only seed disk that test/node/up made for this VM): sets up the network
# (and the second zone's network namespace), starts containerd on the images'
# disk, and starts the kubelet, kube-proxy and the apiserver's egress proxy. Progress lines "podmeter-node: ..." go to the
# serial console, which the host reads; "podmeter-node: error: ..." fails up.
set -eu
seed=/seed
. "$seed/node.env"

say() { echo "podmeter-node: $*" >/dev/console; }
fail() { say "error: $*"; exit 1; }
# shellcheck disable=SC2154 # rc is set inside the trap
trap 'rc=$?; [ "$rc" = 0 ] || say "error: boot.sh failed (exit $rc)"' EXIT
say "boot.sh started (kernel $(uname -r))"

# --- network: slirp's fixed addresses; the host is reachable only at the
# ports qemu forwards (guestfwd to the apiserver on $APISERVER_HOST).
hostname "$NODE_NAME"
echo "$NODE_NAME" >/etc/hostname
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "nameserver 10.0.2.3" >/etc/resolv.conf
printf '127.0.0.1 localhost\n::1 localhost\n10.0.2.15 %s\n' "$NODE_NAME" >/etc/hosts
modprobe overlay
modprobe br_netfilter
# kube-proxy's modes: IPVS (it checks for these modules, it does not load them) and nftables.
modprobe -a ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh nf_conntrack nf_tables
sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
	net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1

# --- the second zone: a Node without a kubelet (test/node/up makes its
# object, NAME-zone-b: zone b, pod CIDR $ZONE_B_POD_CIDR4, InternalIP
# $ZONE_B_NODE_IP) served by a network namespace behind a veth: its address
# on the veth is that Node's InternalIP, its pod CIDR is routed to it, and
# $ZONE_B_POD_IP4 (a "pod" of that node) is on its side of the veth. Tests
# run servers and clients in it (nsenter --net=/run/netns/$ZONE_B_NETNS).
ip netns add "$ZONE_B_NETNS"
ip link add zone-b type veth peer name eth0 netns "$ZONE_B_NETNS"
ip addr add "$ZONE_B_GATEWAY/24" dev zone-b
ip link set zone-b up
ip route add "$ZONE_B_POD_CIDR4" via "$ZONE_B_NODE_IP" dev zone-b
ip -n "$ZONE_B_NETNS" link set lo up
ip -n "$ZONE_B_NETNS" addr add "$ZONE_B_NODE_IP/24" dev eth0
ip -n "$ZONE_B_NETNS" addr add "$ZONE_B_POD_IP4/32" dev eth0
ip -n "$ZONE_B_NETNS" link set eth0 up
ip -n "$ZONE_B_NETNS" route add default via "$ZONE_B_GATEWAY"

# --- containerd (v2, config version 3): systemd cgroups for runc, the local
# pause image as the sandbox, the Debian CNI plugins.
mkdir -p /etc/containerd /etc/cni/net.d /var/lib/kubelet /etc/kubernetes
cat >/etc/containerd/config.toml <<EOT
version = 3
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '$SANDBOX_IMAGE'
[plugins.'io.containerd.cri.v1.runtime']
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '/etc/cni/net.d'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      SystemdCgroup = true
EOT
# Dual-stack bridge: every pod gets an IPv4 and an IPv6 address on cni0.
# The config's version must be one the suite's plugins speak: 1.0.0 from
# bookworm's plugins (1.1), 0.4.0 at most from bullseye's (0.9).
cni_version=0.4.0
if CNI_COMMAND=VERSION /usr/lib/cni/bridge </dev/null 2>/dev/null | grep -q '"1\.0\.0"'; then cni_version=1.0.0; fi
cat >/etc/cni/net.d/10-podmeter.conflist <<EOT
{
  "cniVersion": "$cni_version",
  "name": "podmeter",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_CIDR4" }], [{ "subnet": "$POD_CIDR6" }]],
        "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOT
# The images, imported on the host (build-containerd-root): containerd's
# root directory on its own disk, a per-run overlay of the cached one.
mkdir -p /var/lib/containerd
mount /dev/vdc /var/lib/containerd || fail "cannot mount the containerd root disk /dev/vdc"
mkdir -p /run/systemd/system /run/systemd/system.conf.d
# A stop job (each pod's scope, on reboot) gets 20 s, not 90: a pod whose
# init is `sleep` ignores SIGTERM and waits it out (the reboot check's pods
# did, 130 s a shutdown). The agent saves its state when SIGTERM comes.
printf '[Manager]\nDefaultTimeoutStopSec=20s\n' >/run/systemd/system.conf.d/podmeter-node.conf
cat >/run/systemd/system/containerd.service <<EOT
[Unit]
Description=containerd (podmeter test node)
After=network.target
[Service]
Environment=PATH=$seed/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ExecStart=$seed/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
LimitNOFILE=infinity
OOMScoreAdjust=-999
EOT
systemctl daemon-reload
systemctl start containerd
i=0
until "$seed/bin/ctr" version >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -lt 120 ] || fail "containerd does not answer"; sleep 0.5
done
say "containerd is up; images: $("$seed/bin/ctr" -n k8s.io images ls -q | grep -v '^sha256:' | tr '\n' ' ')"

# --- kubelet: joins the host's apiserver with a client certificate; serves
# only clients of the node CA (the apiserver, through the egress proxy).
cat >/etc/kubernetes/kubelet.yaml <<EOT
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
failSwapOn: false
address: 0.0.0.0
port: 10250
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $seed/pki/node-ca.crt }
authorization:
  mode: Webhook
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
staticPodPath: /etc/kubernetes/manifests
# A test VM has little room: never evict for disk, and keep its images.
evictionHard: { memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1% }
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOT
mkdir -p /etc/kubernetes/manifests
cat >/run/systemd/system/kubelet.service <<EOT
[Unit]
Description=kubelet (podmeter test node)
After=containerd.service
Requires=containerd.service
[Service]
ExecStart=$seed/bin/kubelet --config=/etc/kubernetes/kubelet.yaml --kubeconfig=$seed/kubelet.kubeconfig \
  --hostname-override=$NODE_NAME --node-ip=10.0.2.15 --cert-dir=/var/lib/kubelet/pki \
  --node-labels=topology.kubernetes.io/zone=$NODE_ZONE,topology.kubernetes.io/region=$NODE_REGION
Restart=always
RestartSec=2
EOT
cat >/run/systemd/system/guestproxy.service <<EOT
[Unit]
Description=egress proxy of the host's kube-apiserver (podmeter test node)
[Service]
ExecStart=$seed/bin/guestproxy --listen=:$PROXY_PORT --cert=$seed/pki/guestproxy.crt \
  --key=$seed/pki/guestproxy.key --client-ca=$seed/pki/node-ca.crt
Restart=always
EOT
# --- kube-proxy: Services on this node, in the mode node.env names
# (kube-proxy-mode, on the seed disk, switches it on a running node). It
# programs the kubernetes Service too (its endpoint: the apiserver as forwarded).
cat >/etc/kubernetes/kube-proxy.yaml <<EOT
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: $KUBE_PROXY_MODE
clientConnection: { kubeconfig: $seed/kube-proxy.kubeconfig }
hostnameOverride: $NODE_NAME
# Its node IP, without waiting for the Node (under TCG the kubelet registers it late).
bindAddress: 10.0.2.15
clusterCIDR: $CLUSTER_CIDR
metricsBindAddress: 127.0.0.1:10249
# The kernel's conntrack table size as it is (no nf_conntrack_max of its own).
conntrack: { maxPerCore: 0 }
EOT
cat >/run/systemd/system/kube-proxy.service <<EOT
[Unit]
Description=kube-proxy (podmeter test node)
After=network.target
[Service]
Environment=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ExecStart=$seed/bin/kube-proxy --config=/etc/kubernetes/kube-proxy.yaml
Restart=always
RestartSec=2
EOT
systemctl daemon-reload
systemctl start guestproxy kube-proxy kubelet
say "kubelet started"
