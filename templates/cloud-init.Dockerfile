# c2vm's cloud-init layer (`convert --cloud-init`), built on the kernel layer so that layer stays
# one cache entry shared by disks with and without cloud-init. It installs the distribution's own
# cloud-init and sets where it looks for its instance's data: a NoCloud seed (c2vm run
# --cloud-init, KubeVirt's cloudInitNoCloud), a config drive (OpenStack, KubeVirt's
# cloudInitConfigDrive), GCE, Azure and EC2, else none. Also sudo (the usual `sudo:` rule of a
# user in user-data needs it) and growpart where the distribution packs it. Nothing secret.
FROM {{ base_image }}
USER root
RUN set -eux; \
    {{ install }}
COPY cloud-init-c2vm.cfg /etc/cloud/cloud.cfg.d/99-c2vm.cfg
