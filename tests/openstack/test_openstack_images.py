"""Root images for an OpenStack site (pure): the role's OpenStack packages are part of the
recipe, its name and its content key, so images with and without them are cached apart."""

from __future__ import annotations

import hashlib
import json

from provisiond.images.recipes import root_recipe
from provisiond.roles.openstack import OpenStackSettings


def test_an_openstack_site_s_root_images_carry_the_role_s_packages_under_their_own_name_and_key():
    plain = root_recipe("debian12", "controller")
    settings = OpenStackSettings(virt_type="qemu")
    controller = root_recipe("debian12", "controller", openstack=settings)
    assert (plain.name, controller.name) == ("root-debian12-controller", "root-debian12-controller-openstack")
    assert plain.openstack == () and plain.debconf == ()
    assert {"keystone", "nova-api", "cinder-volume", "python3-openstackclient"} <= set(controller.openstack)
    assert "cinder-common cinder/configure_db boolean false" in controller.debconf
    assert plain.key(b"code") != controller.key(b"code")
    # The package list is in the key: a compute image for KVM and one for QEMU differ.
    qemu = root_recipe("debian12", "compute", openstack=settings)
    kvm = root_recipe("debian12", "compute", openstack=OpenStackSettings(virt_type="kvm"))
    assert "nova-compute-qemu" in qemu.openstack and "nova-compute-kvm" in kvm.openstack
    assert qemu.key(b"code") != kvm.key(b"code")
    # Without OpenStack the key is computed as before OpenStack existed in recipes: images
    # built then stay valid (the key has no OpenStack fields).
    recipe = root_recipe("debian12", "compute")
    before = hashlib.sha256(json.dumps(
        {"kind": "root", "os": "debian12", "role": "compute", "suite": recipe.suite, "mirror": recipe.mirror,
         "packages": sorted(recipe.packages), "services": recipe.services}, sort_keys=True).encode())
    before.update(hashlib.sha256(b"code").digest())
    assert recipe.key(b"code") == before.hexdigest()
