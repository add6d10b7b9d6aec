# c2vm's generic kernel bundle: one kernel and initramfs that boot any image, built once on Debian
# stable and cached (c2vm-kernel:generic-HASH). Used for images with no kernel of their own and
# no distribution template (distroless, FROM scratch, busybox, unknown distros), and on request
# (--kernel generic). Only /boot/vmlinuz-*, /boot/initrd.img-* and /usr/lib/modules go into a
# guest.
#
# Built for the disk's architecture ({{ arch }} here) on that architecture's Debian stable;
# another architecture's build runs under the host's binfmt_misc emulation.
#
# Flavour: Debian's `cloud` kernel. It is built for VMs: virtio (QEMU/KVM, KubeVirt), NVMe, Xen
# and Hyper-V front ends, AWS ENA and Google gVNIC, and it leaves out the thousands of bare-metal
# drivers of the standard flavour (a third the size).
#
# The initramfs (initramfs-tools, zstd) finds the root by UUID and loads only the drivers a VM
# needs, listed below, before it starts the `init=` it is given (one list for every architecture:
# mkinitramfs skips what a kernel lacks, such as ata_piix on arm64); the NIC drivers are in it
# too, since c2vm-init loads no modules. The power button (button) and its input events (evdev)
# let c2vm-init stop the app on ACPI shutdown. vfat and its code pages are there so the ESP mounts
# on a guest that has no modprobe (images often leave out kmod): the kernel cannot load a module
# on demand without it, and what the initramfs loaded stays loaded. qemu_fw_cfg and dmi_sysfs
# show c2vm-init the credentials given at boot (QEMU's fw_cfg, SMBIOS type 11).
#
# An encrypted root (`--luks-passphrase-file`) gets a variant of the bundle of its own
# (c2vm-kernel:generic-luks-HASH) with cryptsetup-initramfs: cryptsetup, dm-crypt and the
# passphrase prompt in the initramfs, whose scripts cost every boot 1.4 s under emulation, so
# plain disks' bundle goes without. A disk names its LUKS volume on the kernel command line
# (`cryptopts=`); initramfs-luks-keyring keeps the volume key where the root's mapping can grow
# (see the file; it does nothing where cryptsetup is not in the initramfs).
#
# Secure Boot: the cloud kernel is signed by Debian, and the bundle carries shim, MokManager and
# the signed loaders of the same release, which c2vm puts on the ESP with it.
FROM {{ base_image }}
USER root
ARG DEBIAN_FRONTEND=noninteractive
COPY initramfs-luks-keyring /etc/initramfs-tools/hooks/zz-c2vm-luks-keyring
# The live media's boot method and its drivers (ISO and network boot; see the files).
COPY initramfs-live /etc/initramfs-tools/scripts/c2vm-live
COPY initramfs-live-hook /etc/initramfs-tools/hooks/zz-c2vm-live
RUN set -eux; \
    chmod 755 /etc/initramfs-tools/hooks/zz-c2vm-luks-keyring /etc/initramfs-tools/hooks/zz-c2vm-live; \
    apt-get update; \
    apt-get install -y --no-install-recommends zstd initramfs-tools kmod; \
    printf 'MODULES=list\nCOMPRESS=zstd\n' > /etc/initramfs-tools/conf.d/c2vm-generic.conf; \
    printf '%s\n' \
        virtio_pci virtio_mmio virtio_blk virtio_scsi virtio_net virtio_console virtio_rng \
        nvme ahci ata_piix sd_mod sr_mod \
        ext4 crc32c_generic vfat nls_cp437 nls_ascii \
        xen_blkfront xen_netfront hv_vmbus hv_storvsc hv_netvsc ena gve \
        button evdev qemu_fw_cfg dmi_sysfs \
        > /etc/initramfs-tools/modules; \
    apt-get install -y --no-install-recommends linux-image-cloud-{{ arch }} {{ unlock_packages }} \
        shim-signed shim-helpers-{{ arch }}-signed systemd-boot-efi-{{ arch }}-signed grub-efi-{{ arch }}-signed; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    ls /boot/vmlinuz-* /boot/initrd.img-*
