#!/usr/bin/env bash
# A single-host Ceph cluster (one mon, one BlueStore OSD on a file, one radosgw) on loopback,
# as a real distributed S3 engine to test against:
#   scripts/rgw.sh up DIR [RGW_PORT]   creates it in DIR (or starts it again), waits until the
#                                      gateway answers, and prints its endpoint and the keys of
#                                      the S3 user it made (about 16 s from an empty DIR)
#   scripts/rgw.sh down DIR            stops its daemons, by the pids they wrote in DIR/run
# Needs Debian's Ceph 16 packages: apt-get install -y --no-install-recommends ceph-mon ceph-osd
# radosgw ceph-common. Everything (data, logs, sockets, pid files, crash dumps) stays in DIR; no
# systemd, no mgr, auth none, pool size 1. The settings that matter: ms_mon_client_mode = crc
# (with auth none, radosgw otherwise fails with -13 and never listens), tcp_nodelay=1 on the
# beast frontend (otherwise a small GET takes 44 ms), the BlueStore block file outside the OSD
# data directory, and public_addr 127.0.0.1 with msgr1 off (otherwise the OSD listens on every
# interface). The mon listens on RGW_PORT + 1.
set -euo pipefail
cmd=${1:?up|down}; dir=$(realpath -m "${2:?DIR}"); rgw_port=${3:-17480}; mon_port=$((rgw_port + 1))
conf=$dir/ceph.conf
ceph_() { ceph -c "$conf" "$@"; }

down() {
  for pidfile in "$dir"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

if [ "$cmd" = down ]; then down; exit 0; fi
[ "$cmd" = up ] || { echo "usage: rgw.sh up|down DIR [RGW_PORT]" >&2; exit 2; }

if [ ! -f "$conf" ]; then
  mkdir -p "$dir"/{run,log,crash,mon,osd/ceph-0,rgw}
  fsid=$(cat /proc/sys/kernel/random/uuid)
  cat > "$conf" <<CONF
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$mon_port
public_addr = 127.0.0.1
ms_bind_msgr1 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
run_dir = $dir/run
pid_file = $dir/run/\$name.pid
admin_socket = $dir/run/\$name.asok
log_file = $dir/log/\$name.log
crash_dir = $dir/crash
mon_data = $dir/mon/\$cluster-\$id
osd_data = $dir/osd/\$cluster-\$id
osd_objectstore = bluestore
bluestore_block_path = $dir/osd-block
bluestore_block_size = 4294967296
bluestore_block_create = true
osd_memory_target = 536870912
[client.rgw.gw]
rgw_frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw_data = $dir/rgw
CONF
  monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
  ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
  ceph-mon -c "$conf" -i a
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  ceph_ osd new "$osd_uuid" >/dev/null
  ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>>"$dir/log/mkfs.log"
  ceph-osd -c "$conf" -i 0
  ceph_ osd crush add osd.0 1 root=default host=localhost >/dev/null 2>&1 || true
else
  ceph-mon -c "$conf" -i a
  ceph-osd -c "$conf" -i 0
fi
radosgw -c "$conf" -n client.rgw.gw
for _ in $(seq 120); do
  curl -s -o /dev/null "http://127.0.0.1:$rgw_port/" && break
  sleep 0.5
done
curl -s -o /dev/null "http://127.0.0.1:$rgw_port/" || { echo "radosgw did not answer on 127.0.0.1:$rgw_port (see $dir/log)" >&2; exit 1; }
if ! radosgw-admin -c "$conf" user info --uid=zipkv >/dev/null 2>&1; then
  radosgw-admin -c "$conf" user create --uid=zipkv --display-name=zipkv --access-key=zipkvtest --secret=zipkvtestsecret >/dev/null
fi
echo "endpoint http://127.0.0.1:$rgw_port access-key zipkvtest secret-key zipkvtestsecret"
