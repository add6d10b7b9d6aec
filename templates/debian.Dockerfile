# c2vm kernel layer for Debian 10+ (and derivatives without their own template).
# The kernel: linux-image-ARCH, or linux-image-cloud-ARCH with --kernel-flavour cloud (ARCH is
# amd64 or arm64; an arm64 image builds under the host's emulation where the host is amd64).
# Adds a kernel with an initramfs (Debian's MODULES=most has virtio, nvme, ahci, ext4, vfat),
# systemd as init, udev, and DHCP on the first NIC with systemd-networkd (bookworm ships
# systemd-resolved as its own package, older releases inside systemd), systemd-repart for the
# root to grow (its own package from Debian 13); wait-online waits for any one link, not all.
# Secure Boot: shim (signed by Microsoft), MokManager, and Debian's signed loader the disk boots
# (systemd-boot, or GRUB with --bootloader grub), all three where the release has them (Debian 12
# has no signed systemd-boot) and none with --secure-boot off. c2vm copies them from this tree to
# the ESP, so shim, loader and kernel come from one release and the guest's upgrades keep them in
# step. shim-signed's loader dependency (`grub-efi-ARCH-bin | systemd-boot`, and `grub2-common |
# systemd-boot`) is met, with the systemd-boot chain, by c2vm-esp-loader, a package with no file
# that provides `systemd-boot`: the real one's scripts would take over the ESP c2vm keeps, and
# GRUB's tools and modules are 25 MiB a systemd-boot disk never runs.
# Nothing secret.
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
# One transaction for the kernel and the rest: the initramfs is built once, at its end (the
# signed loaders' packages in a second one built it again: a minute more under emulation).
# Debian 13 ships systemd-repart on its own: without it the root would not grow to fill a larger
# virtual disk (older releases have it inside systemd).
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
    if apt-cache show systemd-repart >/dev/null 2>&1; then extra="$extra systemd-repart"; fi; \
    signed="{{ signed_packages }}"; \
    for p in $signed; do \
        if ! apt-cache show "$p" >/dev/null 2>&1; then signed=""; fi; \
    done; \
    provides="{{ loader_provides }}"; \
    if [ -n "$signed" ] && [ -n "$provides" ]; then \
        mkdir -p /tmp/c2vm-esp-loader/DEBIAN; \
        printf '%s\n' 'Package: c2vm-esp-loader' 'Version: 1' 'Architecture: all' \
            'Maintainer: c2vm' "Provides: $provides" 'Section: admin' 'Priority: optional' \
            "Description: the $provides on the EFI system partition, kept by c2vm" \
            " c2vm copies the signed loader to the ESP and its hook keeps it there; this package" \
            " stands for the one that would, for shim-signed, and holds no file." \
            > /tmp/c2vm-esp-loader/DEBIAN/control; \
        dpkg-deb --build /tmp/c2vm-esp-loader /tmp/c2vm-esp-loader.deb; \
        dpkg -i /tmp/c2vm-esp-loader.deb; \
        rm -rf /tmp/c2vm-esp-loader /tmp/c2vm-esp-loader.deb; \
    fi; \
    extra="$extra $signed"; \
    apt-get install -y --no-install-recommends \
        {{ kernel_package }} initramfs-tools systemd systemd-sysv udev dbus iproute2 \
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
