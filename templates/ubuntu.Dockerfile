# c2vm kernel layer for Ubuntu 18.04+: the virtual kernel flavour, systemd, udev, DHCP on the
# first NIC with systemd-networkd. Nothing secret.
FROM {{ base_image }}
# The image may run its command as another user; packages install as root. (The VM's service
# still runs as the image's USER: c2vm reads it from the image, not from this layer.)
USER root
ARG DEBIAN_FRONTEND=noninteractive
# zstd before the kernel: initramfs-tools compresses with zstd only when the zstd program is
# there when the kernel's initramfs is built, else it falls back to gzip, about 3x slower to
# unpack at every boot (seconds under emulation). Releases whose mkinitramfs predates zstd
# keep gzip.
# The root is on the VM's own disk: network and NFS drivers stay out of the initramfs.
COPY initramfs-local-root /etc/initramfs-tools/hooks/zz-c2vm-local-root
# The live media's boot method (boot=c2vm-live) and what it needs in the initramfs: an ISO or a
# network boot set of this image boots the same kernel and initramfs as its disk.
COPY initramfs-live /etc/initramfs-tools/scripts/c2vm-live
COPY initramfs-live-hook /etc/initramfs-tools/hooks/zz-c2vm-live
RUN set -eux; \
    chmod 755 /etc/initramfs-tools/hooks/zz-c2vm-local-root /etc/initramfs-tools/hooks/zz-c2vm-live; \
    apt-get update; \
    apt-get install -y --no-install-recommends zstd initramfs-tools; \
    if grep -q zstd /usr/sbin/mkinitramfs; then \
        printf 'COMPRESS=zstd\n' > /etc/initramfs-tools/conf.d/c2vm-compress.conf; \
    fi; \
    extra=""; \
    if apt-cache show systemd-resolved >/dev/null 2>&1; then extra="systemd-resolved"; fi; \
    apt-get install -y --no-install-recommends \
        linux-image-virtual initramfs-tools systemd systemd-sysv udev dbus iproute2 \
        login passwd kmod $extra; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*
RUN set -eux; \
    mkdir -p /etc/systemd/network; \
    printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' > /etc/systemd/network/80-c2vm-dhcp.network; \
    systemctl enable systemd-networkd.service; \
    if [ -e /lib/systemd/system/systemd-resolved.service ]; then systemctl enable systemd-resolved.service; fi; \
    mkdir -p /etc/systemd/system/systemd-networkd-wait-online.service.d; \
    printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30\n' \
        > /etc/systemd/system/systemd-networkd-wait-online.service.d/c2vm.conf
