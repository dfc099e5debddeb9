"""The OpenStack role manifests: order, the values that tie the nodes together, secrets only
where needed, the per-family data, the firewall table, and the documentation of it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML, REPO

from provisiond.errors import UserError
from provisiond.inventory import load_inventory
from provisiond.manifests import ManifestService
from provisiond.roles import SECRET_SCOPES
from provisiond.roles.openstack import COMPUTE_PORTS, CONTROLLER_PORTS, DATABASES, SERVICE_USERS
from provisiond.roles.openstack_data import FAMILIES
from provisiond.roles.secrets import MASK, secret_names

URL = "http://10.213.0.1:8080"
SITE = LAB_SITE_YAML + """\
  agent: {layout_check: false}
  openstack: {workers: 2, virt_type: qemu, provider: {interface: ens4, cidr: 10.213.0.0/24, gateway: 10.213.0.1}}
nodes:
  - {hostname: controller, mac: "52:54:00:00:00:10", role: controller, ip: 10.213.0.10}
  - {hostname: compute1, mac: "52:54:00:00:00:11", role: compute, ip: 10.213.0.11}
  - {hostname: compute2, mac: "52:54:00:00:00:12", role: compute, ip: 10.213.0.12, os: rocky9}
"""
CONTROLLER_IP = "10.213.0.10"


@pytest.fixture
def site(tmp_path: Path):
    path = tmp_path / "inventory.yaml"
    path.write_text(SITE)
    inventory = load_inventory(path)
    service = ManifestService(inventory)
    return inventory, service


def manifest_of(site, host: str) -> dict:
    inventory, service = site
    return service.manifest(inventory.node(host), URL)


def steps(manifest: dict) -> dict[str, dict]:
    return {step["id"]: step for step in manifest["steps"]}


def ids(manifest: dict) -> list[str]:
    return [step["id"] for step in manifest["steps"]]


def ini(manifest: dict, path: str, section: str, option: str) -> str:
    found = [step["value"] for step in manifest["steps"] if step["kind"] == "ini"
             and (step["path"], step["section"], step["option"]) == (path, section, option)]
    assert len(found) == 1, f"{path} [{section}] {option}: {len(found)} steps"
    return found[0]


def before(order: list[str], *chain: str) -> None:
    """Each id in `chain` comes after the one before it."""
    positions = [order.index(step_id) for step_id in chain]
    assert positions == sorted(positions), f"out of order: {chain}"


def test_controller_steps_come_in_a_working_order(site):
    order = ids(manifest_of(site, "controller"))
    # GlusterFS first (the agent's parts), then OpenStack; the role is marked configured last.
    assert order.index("gluster.mount") < order.index("openstack.state-dir")
    assert order[-1] == "openstack.configured"
    before(order, "openstack.hold-starts", "openstack.debconf", "openstack.packages", "openstack.firewall",
           "openstack.database.mariadb", "openstack.db.keystone", "keystone.db-sync", "keystone.fernet-setup",
           "keystone.bootstrap", "keystone.service.keystone", "keystone.serving", "keystone.catalog",
           "glance.db-sync", "glance.service.glance-api", "placement.service.placement-api",
           "nova.api-db-sync", "nova.map-cell0", "nova.create-cell1", "nova.db-sync", "nova.service.nova-conductor",
           "neutron.db-sync", "neutron.service.neutron-api", "neutron.provider-network", "neutron.provider-subnet",
           "cinder.volume-group", "cinder.db-sync", "cinder.service.cinder-volume",
           "verify.token", "verify.glance-store", "cells.wait-computes", "cells.discover-hosts",
           "verify.computes-up", "openstack.configured")
    # Every configuration step of a service comes before the service starts.
    for service, prefix in (("keystone.service.keystone", "keystone."), ("nova.service.nova-api", "nova."),
                            ("cinder.service.cinder-api", "cinder."), ("glance.service.glance-api", "glance.")):
        settings = [i for i, step_id in enumerate(order) if step_id.startswith(prefix)
                    and manifest_of(site, "controller")["steps"][i]["kind"] == "ini"]
        assert max(settings) < order.index(service), service
    # The databases exist (and RabbitMQ's user) before any schema sync.
    assert max(order.index(f"openstack.db.{db.replace('_', '-')}") for db in DATABASES) < order.index("keystone.db-sync")
    assert order.index("openstack.rabbit-permissions") < order.index("nova.service.nova-conductor")


def test_compute_steps_come_in_a_working_order(site):
    manifest = manifest_of(site, "compute1")
    order = ids(manifest)
    before(order, "gluster.mount", "openstack.packages", "compute.instances-on-gluster", "compute.instances-owner",
           "compute.service.nova-compute", "compute.agent.neutron-linuxbridge-agent", "compute.up",
           "verify.libvirt", "verify.nova-compute", "verify.instances-writable", "openstack.configured")
    report = steps(manifest)["compute.up"]
    barrier = steps(manifest_of(site, "controller"))["cells.wait-computes"]
    assert report["fact"] == barrier["fact"] == "nova-compute-up"
    assert barrier["nodes"] == ["compute1", "compute2"]


def test_database_urls_point_every_service_at_the_controller(site):
    manifest = manifest_of(site, "controller")
    for path, section, user, database in (
        ("/etc/keystone/keystone.conf", "database", "keystone", "keystone"),
        ("/etc/glance/glance-api.conf", "database", "glance", "glance"),
        ("/etc/placement/placement.conf", "placement_database", "placement", "placement"),
        ("/etc/nova/nova.conf", "api_database", "nova", "nova_api"),
        ("/etc/nova/nova.conf", "database", "nova", "nova"),
        ("/etc/neutron/neutron.conf", "database", "neutron", "neutron"),
        ("/etc/cinder/cinder.conf", "database", "cinder", "cinder"),
    ):
        url = ini(manifest, path, section, "connection")
        assert url == f"mysql+pymysql://{user}:${{secret:{user}-db}}@{CONTROLLER_IP}/{database}", path
    # The databases are created for the same users with the same secrets.
    for database in DATABASES:
        step = steps(manifest)[f"openstack.db.{database.replace('_', '-')}"]
        user = database.split("_")[0]
        assert f"CREATE DATABASE IF NOT EXISTS {database};" in step["shell"]
        assert f"TO '{user}'@'%'" in step["shell"] and step["env"] == {"DB_PASSWORD": f"${{secret:{user}-db}}"}
        assert "$DB_PASSWORD" in step["shell"] and "secret:" not in step["shell"]
    # Schemas are made as each service's user (the manage commands write the service's own log).
    for step_id, user in (("keystone.db-sync", "keystone"), ("nova.api-db-sync", "nova"), ("nova.map-cell0", "nova"),
                          ("glance.db-sync", "glance"), ("neutron.db-sync", "neutron"), ("cinder.db-sync", "cinder"),
                          ("placement.db-sync", "placement")):
        assert steps(manifest)[step_id]["argv"][:4] == ["runuser", "-u", user, "--"], step_id
    assert steps(manifest)["keystone.bootstrap"]["shell"].startswith("runuser -u keystone -- keystone-manage bootstrap ")
    # MariaDB listens where the URLs point.
    assert f"bind-address = {CONTROLLER_IP}\n" in steps(manifest)["openstack.mariadb-config"]["content"]


def test_transport_and_keystone_urls_are_the_same_on_every_node(site):
    controller, compute1, compute2 = (manifest_of(site, host) for host in ("controller", "compute1", "compute2"))
    transport = f"rabbit://openstack:${{secret:rabbit-openstack}}@{CONTROLLER_IP}:5672/"
    for manifest in (controller, compute1, compute2):
        assert ini(manifest, "/etc/nova/nova.conf", "DEFAULT", "transport_url") == transport
        assert ini(manifest, "/etc/nova/nova.conf", "placement", "auth_url") == f"http://{CONTROLLER_IP}:5000"
        assert ini(manifest, "/etc/nova/nova.conf", "neutron", "password") == "${secret:neutron-user}"
        assert ini(manifest, "/etc/nova/nova.conf", "placement", "region_name") == "RegionOne"
    for path in ("/etc/neutron/neutron.conf", "/etc/cinder/cinder.conf"):
        assert ini(controller, path, "DEFAULT", "transport_url") == transport
    assert ini(compute1, "/etc/neutron/neutron.conf", "DEFAULT", "transport_url") == transport
    # The URL every service authenticates against is the one bootstrap registered.
    bootstrap = steps(controller)["keystone.bootstrap"]["shell"]
    assert f"--bootstrap-public-url http://{CONTROLLER_IP}:5000/v3 " in bootstrap
    for path in ("/etc/glance/glance-api.conf", "/etc/nova/nova.conf", "/etc/neutron/neutron.conf",
                 "/etc/cinder/cinder.conf", "/etc/placement/placement.conf"):
        assert ini(controller, path, "keystone_authtoken", "www_authenticate_uri") == f"http://{CONTROLLER_IP}:5000"
        assert ini(controller, path, "keystone_authtoken", "region_name") == "RegionOne"
    catalog = steps(controller)["keystone.catalog-spec"]["content"]
    assert f'"url": "http://{CONTROLLER_IP}:8774/v2.1"' in catalog and '"region": "RegionOne"' in catalog
    assert ini(compute1, "/etc/nova/nova.conf", "glance", "api_servers") == f"http://{CONTROLLER_IP}:9292"
    assert ini(compute1, "/etc/nova/nova.conf", "vnc", "novncproxy_base_url") == \
        f"http://{CONTROLLER_IP}:6080/vnc_auto.html"


def test_storage_values_match_the_installers_layout(site):
    controller, compute1 = manifest_of(site, "controller"), manifest_of(site, "compute1")
    assert ini(controller, "/etc/cinder/cinder.conf", "lvm", "volume_group") == "nova-volumes"
    assert ini(controller, "/etc/cinder/cinder.conf", "DEFAULT", "enabled_backends") == "lvm"
    assert "vgs nova-volumes" in steps(controller)["cinder.volume-group"]["shell"]
    assert "cinder-common cinder/volume_group string nova-volumes" in steps(controller)["openstack.debconf-answers"]["content"]
    assert ini(controller, "/etc/glance/glance-api.conf", "glance_store", "filesystem_store_datadir") == \
        "/var/lib/glance/images"
    assert steps(controller)["glance.images-dir"]["owner"] == "glance"
    assert "/var/lib/glance/images/$id" in steps(controller)["verify.glance-store"]["shell"]
    # Instances live on the GlusterFS volume the agent mounted.
    mount = steps(compute1)["gluster.mount"]["path"]
    assert mount == "/var/lib/nova/instances"
    assert ini(compute1, "/etc/nova/nova.conf", "DEFAULT", "instances_path") == mount
    assert "fuse.glusterfs" in steps(compute1)["compute.instances-on-gluster"]["shell"]


def test_secrets_only_where_the_role_needs_them(site):
    controller, compute1, compute2 = (manifest_of(site, host) for host in ("controller", "compute1", "compute2"))
    databases = {f"{user}-db" for user in ("keystone", "glance", "placement", "nova", "neutron", "cinder")}
    users = {f"{user}-user" for user in SERVICE_USERS}
    assert secret_names(controller) == databases | users | {"rabbit-openstack", "openstack-admin"}
    for compute in (compute1, compute2):
        assert secret_names(compute) == {"rabbit-openstack", "placement-user", "neutron-user"}
    assert all(name in SECRET_SCOPES for name in secret_names(controller))
    # The masked form (render manifest, logs) shows no placeholder and no value.
    inventory, service = site
    masked = service.masked(inventory.node("compute1"), URL)
    assert MASK in str(masked) and "${secret:" not in str(masked)


def test_a_compute_template_asking_for_a_database_password_is_refused(site, tmp_path: Path):
    inventory, _ = site
    override = tmp_path / "templates" / "manifests" / "openstack"
    override.mkdir(parents=True)
    (override / "compute-verify.yaml.j2").write_text(
        '- id: leak\n  kind: command\n  title: t\n  argv: ["true"]\n  env: {X: {{ secret("nova-db") | tojson }}}\n')
    with pytest.raises(UserError, match="nova-db"):
        ManifestService(inventory, [tmp_path / "templates"]).manifest(inventory.node("compute1"), URL)


def test_each_node_gets_its_own_secrets_resolved(site):
    inventory, service = site
    values = {name: f"value-of-{name}" for name in SECRET_SCOPES}
    manifest = service.for_node(inventory.node("compute1"), URL, values.__getitem__)
    text = str(manifest)
    assert "value-of-rabbit-openstack" in text and "value-of-nova-db" not in text and "${secret:" not in text


def test_packages_services_and_paths_come_from_the_os_family(site):
    debian, rocky = manifest_of(site, "compute1"), manifest_of(site, "compute2")
    assert debian["os_family"] == "debian" and rocky["os_family"] == "rhel"
    assert steps(debian)["openstack.packages"]["names"] == [
        "nova-compute-qemu", "nova-compute", "neutron-linuxbridge-agent", "nftables"]
    assert "openstack-nova-compute" in steps(rocky)["openstack.packages"]["names"]
    assert steps(rocky)["openstack.repository"]["names"] == ["centos-release-openstack-zed"]
    assert steps(debian)["compute.service.nova-compute"]["name"] == "nova-compute"
    assert steps(rocky)["compute.service.openstack-nova-compute"]["name"] == "openstack-nova-compute"
    # Debian holds package scripts back and answers debconf; RPMs start nothing on install.
    assert "openstack.hold-starts" in ids(debian) and "openstack.debconf" in ids(debian)
    assert "openstack.hold-starts" not in ids(rocky) and "openstack.debconf" not in ids(rocky)
    assert steps(debian)["openstack.firewall-rules"]["path"] == "/etc/nftables.conf"
    assert steps(rocky)["openstack.firewall-rules"]["path"] == "/etc/sysconfig/nftables.conf"
    # QEMU where the site says there is no KVM.
    assert ini(debian, "/etc/nova/nova-compute.conf", "libvirt", "virt_type") == "qemu"
    assert ini(rocky, "/etc/nova/nova.conf", "libvirt", "virt_type") == "qemu"


def test_every_family_names_every_component():
    debian, rhel = FAMILIES["debian"], FAMILIES["rhel"]
    assert set(debian.packages) == set(rhel.packages)
    assert set(debian.services) == set(rhel.services)
    assert set(debian.paths) == set(rhel.paths)


def test_policy_rc_d_holds_starts_until_the_role_is_configured(site):
    manifest = manifest_of(site, "controller")
    policy = steps(manifest)["openstack.hold-starts"]
    assert policy["path"] == "/usr/sbin/policy-rc.d" and policy["mode"] == "0755"
    marker = steps(manifest)["openstack.configured"]["path"]
    assert f"[ -e {marker} ] && exit 0\nexit 101\n" in policy["content"]
    answers = steps(manifest)["openstack.debconf-answers"]["content"].splitlines()
    assert "nova-consoleproxy nova-consoleproxy/daemon_type select novnc" in answers
    configure = [line for line in answers if "/configure_" in line]
    assert configure and all(line.endswith("boolean false") for line in configure)
    # Services the Debian postinsts start but do not enable are enabled explicitly.
    for name in ("placement-api", "neutron-api", "neutron-rpc-server", "cinder-api", "cinder-scheduler", "cinder-volume"):
        service = next(step for step in manifest["steps"] if step["kind"] == "service" and step["name"] == name)
        assert service["enabled"] is True and service["state"] == "started"


def test_workers_are_a_site_setting(site):
    manifest = manifest_of(site, "controller")
    for path in ("/etc/keystone/keystone-uwsgi.ini", "/etc/nova/nova-api-uwsgi.ini", "/etc/neutron/neutron-api-uwsgi.ini",
                 "/etc/cinder/cinder-api-uwsgi.ini", "/etc/placement/placement-api-uwsgi.ini"):
        assert ini(manifest, path, "uwsgi", "processes") == "2"
    assert ini(manifest, "/etc/glance/glance-api.conf", "DEFAULT", "workers") == "2"


def test_services_restart_when_their_configuration_changes(site):
    manifest = manifest_of(site, "controller")
    written = {step["path"] for step in manifest["steps"] if step["kind"] in ("ini", "file")}
    for step in manifest["steps"]:
        if step["kind"] == "service":
            assert set(step["watch"]) <= written, step["id"]
    assert "/etc/nova/nova.conf" in steps(manifest)["nova.service.nova-conductor"]["watch"]
    assert "/etc/neutron/plugins/ml2/ml2_conf.ini" in steps(manifest)["neutron.service.neutron-api"]["watch"]


def test_firewall_opens_exactly_the_role_ports(site):
    controller = steps(manifest_of(site, "controller"))["openstack.firewall-rules"]["content"]
    compute = steps(manifest_of(site, "compute1"))["openstack.firewall-rules"]["content"]
    assert "policy drop;" in controller and "policy drop;" in compute
    for port in ("5000", "9292", "8774", "8776", "9696", "8778", "6080"):
        assert f"tcp dport {port} accept" in controller
    assert "ip saddr 10.213.0.0/24 tcp dport 3306 accept" in controller
    assert "ip saddr { 10.213.0.11, 10.213.0.12 } tcp dport 3260 accept" in controller
    assert "49152-60999" not in controller  # the controller holds no brick
    assert "ip saddr 10.213.0.0/24 tcp dport 49152-60999 accept" in compute
    assert "ip saddr { 10.213.0.11, 10.213.0.12 } tcp dport 16509 accept" in compute
    assert "3306" not in compute and "5000" not in compute


def test_migration_ports_stay_clear_of_gluster_bricks(site):
    inventory, _ = site
    low, high = inventory.site.openstack.migration_ports
    assert low > 60999 and high >= low
    compute = manifest_of(site, "compute1")
    assert ini(compute, "/etc/libvirt/qemu.conf", "", "migration_port_min") == str(low)
    assert any(port.ports == f"{low}-{high}" for port in COMPUTE_PORTS)


def test_a_site_without_openstack_gets_glusterfs_only(tmp_path: Path):
    path = tmp_path / "inventory.yaml"
    path.write_text(SITE.replace("  openstack: {workers: 2, virt_type: qemu, provider: "
                                 "{interface: ens4, cidr: 10.213.0.0/24, gateway: 10.213.0.1}}\n", ""))
    inventory = load_inventory(path)
    manifest = ManifestService(inventory).manifest(inventory.node("controller"), URL)
    assert ids(manifest) and all(step_id.startswith(("gluster.", "layout.")) for step_id in ids(manifest))


def test_a_bad_openstack_setting_names_the_line(tmp_path: Path):
    path = tmp_path / "inventory.yaml"
    path.write_text(SITE.replace("virt_type: qemu", "virt_type: xen"))
    with pytest.raises(UserError, match=r"inventory.yaml:\d+.*virt_type"):
        load_inventory(path)


def test_an_operator_overrides_a_config_template_by_name(site, tmp_path: Path):
    inventory, _ = site
    override = tmp_path / "templates" / "manifests" / "openstack"
    override.mkdir(parents=True)
    (override / "mariadb.cnf.j2").write_text("[mysqld]\nbind-address = {{ openstack.controller_ip }}\nmax_connections = 100\n")
    manifest = ManifestService(inventory, [tmp_path / "templates"]).manifest(inventory.node("controller"), URL)
    assert steps(manifest)["openstack.mariadb-config"]["content"] == \
        f"[mysqld]\nbind-address = {CONTROLLER_IP}\nmax_connections = 100\n"


def test_the_ports_table_in_the_docs_matches_the_code():
    text = (REPO / "docs" / "openstack.md").read_text()
    table = text.split("<!-- ports -->")[1].split("<!-- /ports -->")[0]
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")) for line in table.splitlines()
            if re.match(r"^\| (controller|compute) ", line)}
    expected = {(role, port.ports, port.protocol, port.service, port.source)
                for role, ports in (("controller", CONTROLLER_PORTS), ("compute", COMPUTE_PORTS)) for port in ports}
    assert {row[:5] for row in rows} == expected


def test_cluster_check_runs_after_cell_discovery_only_when_the_site_asks(tmp_path: Path):
    plain = tmp_path / "plain.yaml"
    plain.write_text(SITE)
    inventory = load_inventory(plain)
    assert not [i for i in ids(ManifestService(inventory).manifest(inventory.node("controller"), URL))
                if i.startswith("cluster.")]
    asked = tmp_path / "asked.yaml"
    asked.write_text(SITE.replace("openstack: {workers: 2,", "openstack: {cluster_check: true, workers: 2,"))
    inventory = load_inventory(asked)
    service = ManifestService(inventory)
    manifest = service.manifest(inventory.node("controller"), URL)
    order = ids(manifest)
    before(order, "verify.glance-store", "cells.discover-hosts", "verify.computes-up", "cluster.check-script",
           "cluster.check-spec", "cluster.check", "cluster.checked", "openstack.configured")
    by_id = steps(manifest)
    spec = by_id["cluster.check-spec"]["content"]
    assert '"volume_group": "nova-volumes"' in spec and '"instances_dir": "/var/lib/nova/instances"' in spec
    assert '"computes": [\n    "compute1",\n    "compute2"\n  ]' in spec
    # Guarded by the tool's own check; the admin credentials come from the openrc, never the file.
    assert "cluster_check.py check" in by_id["cluster.check"]["unless"]
    assert by_id["cluster.check"]["shell"].startswith(". /root/admin-openrc && ")
    assert "{{secret:" not in spec
    assert by_id["cluster.checked"]["fact"] == "openstack-cluster-checked"
    # Compute nodes never get the check.
    assert not [i for i in ids(service.manifest(inventory.node("compute1"), URL)) if i.startswith("cluster.")]


def test_the_cluster_check_tool_is_valid_python():
    source = (REPO / "manifests/openstack/cluster_check.py").read_text()
    compile(source, "cluster_check.py", "exec")


def test_image_packages_are_the_role_packages_with_node_independent_debconf(site):
    from provisiond.roles.openstack import OpenStackSettings, image_packages

    inventory, _service = site
    controller = steps(manifest_of(site, "controller"))["openstack.packages"]["names"]
    settings = inventory.site.openstack
    packages, debconf = image_packages(settings, "controller", "debian")
    assert list(packages) == controller
    compute_packages, _ = image_packages(settings, "compute", "debian")
    assert "nova-compute-qemu" in compute_packages and "nova-api" not in compute_packages
    assert "cinder-common cinder/volume_group string nova-volumes" in debconf
    assert not [line for line in debconf if "my-ip" in line or "{" in line]
    assert image_packages(None, "controller", "debian") == ((), ())
    assert image_packages(OpenStackSettings(), "storage", "debian") == ((), ())


def test_tcg_computes_ask_libvirt_for_no_cpu_model(site):
    manifest = manifest_of(site, "compute1")  # virt_type qemu in SITE
    nova_compute = next(s["path"] for s in manifest["steps"] if s["id"] == "compute.libvirt.libvirt.virt-type")
    assert ini(manifest, nova_compute, "libvirt", "cpu_mode") == "none"


def test_every_service_gets_ten_minutes_to_start_before_its_start(site):
    for host in ("controller", "compute1"):
        manifest = manifest_of(site, host)
        order = ids(manifest)
        by_id = steps(manifest)
        started = [s for s in manifest["steps"] if s["kind"] == "service" and not s["name"].endswith(".socket")
                   and s["title"].startswith("Enable and start") and not s["id"].startswith(("gluster.", "openstack.firewall"))]
        assert started
        for step in started:
            drop_in = by_id[step["id"] + ".start-timeout"]
            assert drop_in["path"] == f"/etc/systemd/system/{step['name']}.service.d/provisiond-start-timeout.conf"
            assert drop_in["content"] == "[Service]\nTimeoutStartSec=600\n"
            assert "NeedDaemonReload" in by_id[step["id"] + ".daemon-reload"]["unless"]
            before(order, step["id"] + ".start-timeout", step["id"] + ".daemon-reload", step["id"])


def test_computes_start_nova_compute_only_after_the_controller_passed_its_checks(site):
    controller = ids(manifest_of(site, "controller"))
    before(controller, "verify.provider-network", "verify.controller-up", "cells.wait-computes")
    compute = manifest_of(site, "compute1")
    before(ids(compute), "compute.hypervisor.libvirtd", "compute.wait-controller", "compute.service.nova-compute",
           "compute.up")
    barrier = steps(compute)["compute.wait-controller"]
    assert (barrier["fact"], barrier["nodes"]) == ("openstack-controller-up", ["controller"])
    assert steps(manifest_of(site, "controller"))["verify.controller-up"]["fact"] == barrier["fact"]
