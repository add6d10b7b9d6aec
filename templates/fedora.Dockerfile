# c2vm kernel layer for Fedora, CentOS Stream, Rocky and Alma: kernel-core, a generic (not
# host-only) dracut initramfs with virtio, nvme, ahci, ext4 and vfat, systemd, udev, and DHCP on
# the first NIC with NetworkManager. Nothing secret.
FROM {{ base_image }}
# The image may run its command as another user; packages install as root. (The VM's service
# still runs as the image's USER: c2vm reads it from the image, not from this layer.)
USER root
RUN set -eux; \
    dnf -y install kernel-core dracut systemd systemd-udev NetworkManager iproute passwd util-linux e2fsprogs; \
    printf 'hostonly="no"\nadd_drivers+=" virtio_blk virtio_pci virtio_scsi virtio_net nvme ahci sd_mod ext4 vfat "\n' \
        > /etc/dracut.conf.d/c2vm.conf; \
    kver="$(ls /lib/modules | sort -V | tail -n 1)"; \
    cp "/lib/modules/$kver/vmlinuz" "/boot/vmlinuz-$kver"; \
    dracut --force --no-hostonly --kver "$kver" "/boot/initramfs-$kver.img"; \
    systemctl enable NetworkManager.service; \
    dnf clean all
