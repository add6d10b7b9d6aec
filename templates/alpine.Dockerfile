# c2vm kernel layer for Alpine: linux-virt, an initramfs with virtio/nvme/ahci/ext4/vfat, OpenRC,
# mdev, a getty on the serial console ({{ serial_console }}) and DHCP on eth0. Nothing secret.
FROM {{ base_image }}
# The image may run its command as another user; packages install as root. (The VM's service
# still runs as the image's USER: c2vm reads it from the image, not from this layer.)
USER root
RUN set -eux; \
    apk add --no-cache linux-virt mkinitfs openrc busybox-openrc busybox-mdev-openrc alpine-conf ifupdown-ng e2fsprogs; \
    echo 'features="ata base ext4 keymap kms mmc nvme scsi usb virtio vfat"' > /etc/mkinitfs/mkinitfs.conf; \
    mkinitfs "$(ls /lib/modules | sort -V | tail -n 1)"; \
    for s in devfs dmesg mdev hwdrivers; do rc-update add "$s" sysinit; done; \
    for s in modules sysctl hostname bootmisc syslog networking; do rc-update add "$s" boot; done; \
    for s in mount-ro killprocs savecache; do rc-update add "$s" shutdown; done; \
    printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n' > /etc/network/interfaces; \
    grep -q '^{{ serial_console }}::' /etc/inittab || echo '{{ serial_console }}::respawn:/sbin/getty -L 115200 {{ serial_console }} vt100' >> /etc/inittab
