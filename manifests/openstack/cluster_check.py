#!/usr/bin/python3
"""The whole cluster, proved from the controller after cell discovery (site.openstack.cluster_check).

`cluster_check.py apply FILE` makes (or finds, by name) a 1 GiB Cinder volume and checks that
it is a logical volume `volume-<id>` in the volume group; boots one instance without a network
(`networks="none"`) from the image controller-verify stored, with a flavor of 64 MiB, waits
until it is ACTIVE on a compute node, and checks that its files are under the instances
directory here, which is the Gluster volume the compute nodes share: the controller sees what
the compute node wrote. `check FILE` exits 0 when all of that already holds. FILE (JSON, no
secrets) names the objects and paths; the admin credentials come from the environment
(/root/admin-openrc). One process and one login (openstacksdk): each `openstack` CLI call costs
seconds, much more on a TCG lab node. The image boots nothing useful; ACTIVE is what is proved.
"""

import json
import os
import subprocess
import sys
import time

import openstack

VOLUME_WAIT = 900  # seconds; creating an LV is quick, a loaded TCG node is not
SERVER_WAIT = 2400  # image copy to the compute node, qemu under TCG inside a TCG guest


class CheckFailed(Exception):
    """One check of the cluster failed; the message says which and what was seen."""


def volume(conn, spec, apply):
    found = conn.block_storage.find_volume(spec["name"])
    if found is None:
        if not apply:
            raise CheckFailed(f"no volume {spec['name']}")
        found = conn.block_storage.create_volume(name=spec["name"], size=1)
    try:
        found = conn.block_storage.wait_for_status(found, "available", failures=["error"],
                                                   interval=5, wait=VOLUME_WAIT if apply else 1)
    except openstack.exceptions.SDKException as exc:
        raise CheckFailed(f"volume {spec['name']} is not available: {exc}") from None
    lvs = subprocess.run(["lvs", "--noheadings", "-o", "lv_name", spec["volume_group"]],
                         capture_output=True, text=True, timeout=120, check=False)
    names = lvs.stdout.split()
    if f"volume-{found.id}" not in names:
        raise CheckFailed(f"volume {found.id} is not a logical volume in {spec['volume_group']} "
                          f"(lvs: {' '.join(names) or lvs.stderr.strip()})")
    return f"volume-{found.id} in {spec['volume_group']}"


def server(conn, spec, apply):
    found = conn.compute.find_server(spec["name"])
    if found is None:
        if not apply:
            raise CheckFailed(f"no instance {spec['name']}")
        image = conn.image.find_image(spec["image"])
        if image is None:
            raise CheckFailed(f"no image {spec['image']} in Glance (controller-verify stores it)")
        flavor = conn.compute.find_flavor(spec["name"])
        if flavor is None:
            flavor = conn.compute.create_flavor(name=spec["name"], ram=64, vcpus=1, disk=1)
        found = conn.compute.create_server(name=spec["name"], image_id=image.id, flavor_id=flavor.id,
                                           networks="none")
    deadline = time.monotonic() + (SERVER_WAIT if apply else 0)
    while True:
        found = conn.compute.get_server(found.id)
        if found.status == "ACTIVE":
            break
        if found.status == "ERROR":
            fault = (found.fault or {}).get("message", "no fault recorded")
            raise CheckFailed(f"instance {found.id} is in ERROR: {fault}")
        if time.monotonic() > deadline:
            raise CheckFailed(f"instance {found.id} is {found.status}, not ACTIVE")
        time.sleep(10)
    host = found.compute_host
    if host not in spec["computes"]:
        raise CheckFailed(f"instance {found.id} runs on {host!r}, not on a compute node")
    return found.id, host


def instance_files(spec, server_id, host):
    fstype = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", spec["instances_dir"]],
                            capture_output=True, text=True, timeout=60, check=False).stdout.strip()
    if fstype != "fuse.glusterfs":
        raise CheckFailed(f"{spec['instances_dir']} here is {fstype or 'not mounted'}, not the Gluster volume")
    directory = os.path.join(spec["instances_dir"], server_id)
    if not os.path.isfile(os.path.join(directory, "disk")):
        listing = sorted(os.listdir(directory)) if os.path.isdir(directory) else "missing"
        raise CheckFailed(f"the disk of instance {server_id} (on {host}) is not in {directory} "
                          f"seen from this node: {listing}")
    return directory


def run(spec, apply):
    conn = openstack.connect()
    lv = volume(conn, spec, apply)
    server_id, host = server(conn, spec, apply)
    directory = instance_files(spec, server_id, host)
    return {"volume": lv, "instance": server_id, "host": host, "files": directory}


def main(argv):
    if len(argv) != 3 or argv[1] not in ("check", "apply"):
        print("usage: cluster_check.py check|apply FILE", file=sys.stderr)
        return 2
    with open(argv[2]) as handle:
        spec = json.load(handle)
    try:
        result = run(spec, argv[1] == "apply")
    except (CheckFailed, openstack.exceptions.SDKException) as exc:
        print(f"cluster check: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
