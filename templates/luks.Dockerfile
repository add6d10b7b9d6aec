# c2vm's unlock layer (`convert --luks-passphrase-file`), built on the kernel layer (and the
# cloud-init layer, where there is one), so the kernel layer stays one cache entry shared by
# encrypted and plain disks. It installs the distribution's cryptsetup support for the
# initramfs, whose hook rebuilds the initramfs with cryptsetup, dm-crypt and a passphrase prompt
# on the console. The disk says what to unlock on the kernel command line (`cryptopts=`, with
# the LUKS UUID) and in /etc/crypttab, which c2vm writes into each disk: the initramfs itself
# names no disk, so one layer serves every disk. Nothing secret.
# initramfs-luks-keyring keeps the volume key where systemd-growfs can resize the mapping when
# the root grows (see the file).
FROM {{ base_image }}
USER root
COPY initramfs-luks-keyring /etc/initramfs-tools/hooks/zz-c2vm-luks-keyring
RUN set -eux; \
    chmod 755 /etc/initramfs-tools/hooks/zz-c2vm-luks-keyring; \
    {{ install }}
