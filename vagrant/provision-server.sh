#!/bin/sh
# Runs inside the provisioner VM (as root) on `vagrant up provisioner`: installs provisiond
# from the synced checkout, writes the lab inventory and starts `provisiond serve` on the
# lab network as a systemd service.
set -eu
cd /opt/provisiond
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make python3-venv >/dev/null
make deps
LAB_IF=$(ip -o -4 addr show | awk '$4 == "10.213.0.1/24" {print $2}')
mkdir -p /etc/provisiond /var/lib/provisiond /srv/provisiond/tftp
.venv/bin/python - <<PY
from provisiond.lab.plan import inventory_yaml, lab_nodes
nodes = lab_nodes(${LAB_COMPUTES:-2})
open("/etc/provisiond/inventory.yaml", "w").write(inventory_yaml(nodes, "${LAB_INSTALL:-preseed}", None))
PY
cat > /etc/provisiond/provisiond.toml <<TOML
inventory = "/etc/provisiond/inventory.yaml"
state_dir = "/var/lib/provisiond"
[serve]
interfaces = ["$LAB_IF"]
tftp_root = "/srv/provisiond/tftp"
[os.debian12]
cmdline = "console=ttyS0,115200n8"
TOML
cat > /etc/systemd/system/provisiond.service <<UNIT
[Unit]
Description=provisiond serve (the lab network)
After=network-online.target
[Service]
ExecStart=/opt/provisiond/.venv/bin/provisiond --config /etc/provisiond/provisiond.toml serve
Restart=on-failure
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now provisiond.service
for node in $(.venv/bin/python -c "import yaml; print(' '.join(n['hostname'] for n in yaml.safe_load(open('/etc/provisiond/inventory.yaml'))['nodes']))"); do
  .venv/bin/provisiond --config /etc/provisiond/provisiond.toml netboot "$node" on
done
echo "provisiond serves the lab network on $LAB_IF; now: vagrant up controller compute1 compute2"
