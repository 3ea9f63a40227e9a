# The Debian root filesystem every test image starts from: the tar that
# `build` made with debootstrap --variant=minbase (no registry is reachable,
# so there is no debian:bookworm to pull).
FROM scratch
ADD rootfs.tar /
CMD ["bash"]
