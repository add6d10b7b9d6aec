# c2vm as a container image: c2vm and every host tool it runs, nothing else. A conversion needs
# no privileges and no capabilities: c2vm writes the disk as plain file I/O (no loop device, no
# mount), so `docker run` needs only the engine's socket and a directory for the disk:
#
#   docker run --rm -v /var/run/docker.sock:/var/run/docker.sock -v "$PWD:/out" \
#     --user "$(id -u):$(id -g)" --group-add "$(stat -c %g /var/run/docker.sock)" \
#     c2vm convert debian:latest -o /out/debian.qcow2 --password-stdin < pw.txt
#
# This file is the second half of scripts/container-image, not a root Dockerfile: `docker build .`
# of the repository cannot work with it. The script builds c2vm on the host first and makes a
# build context of the binary alone (this file copies it, so the image holds no toolchain), and
# tags the result `c2vm:VERSION` and `c2vm`.
# BASE is Debian 13 (trixie): its e2fsprogs 1.47.2 reads tar, so conversions run as any user.
ARG BASE=debian:trixie
FROM ${BASE}
# The `convert` packages of host-packages.txt, no more, no less (a unit test checks).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      e2fsprogs libarchive13t64 mtools syslinux syslinux-common systemd-boot-efi \
      grub-efi-amd64-bin grub-pc-bin qemu-utils cryptsetup-bin tar gzip dpkg ca-certificates \
      squashfs-tools-ng xorriso \
 && rm -rf /var/lib/apt/lists/*
COPY c2vm /usr/local/bin/c2vm
# Any user may run it (`--user`); scratch goes to /tmp.
ENV TMPDIR=/tmp
ENTRYPOINT ["/usr/local/bin/c2vm"]
CMD ["--help"]
