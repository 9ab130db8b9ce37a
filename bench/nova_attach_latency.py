#!/usr/bin/python3
"""Attach and detach latency through Nova's API, beside the bare libvirt call.

    bench/nova_attach_latency.py --state DIR --server DOMAIN --anchor BINARY [--cycles 20]
                                 [--uri qemu:///system]

Runs against a controller already started with --gateway on state directory DIR, a libvirtd at
URI and a running guest DOMAIN (bench/nova_attach.sh sets all three up and calls this). For a
plain and an encrypted (LUKS2) volume, CYCLES times each, after one untimed warm-up cycle:
  attach: POST /v2.1/bench/servers/ID/os-volume_attachments until its answer (the controller
          answers once libvirt has attached the disk live and persistent); then, untimed, the
          domain's live XML (virsh dumpxml) must hold a disk with the volume's serial;
  detach: DELETE .../os-volume_attachments/VOLUME until its answer (given after libvirt's
          DEVICE_REMOVED event and the removal from the definition); then, untimed, the live XML
          must no longer hold it.
The anchor rows run BINARY (bench/libvirt_attach_anchor.cpp) on the same domain with the same
disk XML the controller uses (network disk, nbd over the gateway's unix socket, scsi unit 1),
pointing at the same kind of volume exported by a Cinder attachment: virDomainAttachDeviceFlags
(LIVE|CONFIG) alone, and the live detach until DEVICE_REMOVED plus the persistent one.
Prints p50/p90/max per row, and the controller's overhead: its p50 minus the anchor's.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from xml.sax.saxutils import escape, quoteattr

from attach_latency import Api, create_volume, percentile


def in_live_xml(uri, domain, serial):
    xml = subprocess.run(["virsh", "-q", "-c", uri, "dumpxml", domain], check=True, capture_output=True,
                         text=True).stdout
    return f"<serial>{serial}</serial>" in xml


def controller_cycles(nova, uri, domain, volume_id, cycles):
    attach, detach = [], []
    for i in range(cycles + 1):
        t0 = time.perf_counter()
        r = nova.call("POST", f"/servers/{domain}/os-volume_attachments", {"volumeAttachment": {"volumeId": volume_id}},
                      want=(200,))
        a = time.perf_counter() - t0
        if r["volumeAttachment"]["volumeId"] != volume_id or not in_live_xml(uri, domain, volume_id):
            sys.exit(f"cycle {i}: volume {volume_id} is not in the live XML of {domain} after the attach answered")
        t0 = time.perf_counter()
        nova.call("DELETE", f"/servers/{domain}/os-volume_attachments/{volume_id}", want=(202,))
        d = time.perf_counter() - t0
        if in_live_xml(uri, domain, volume_id):
            sys.exit(f"cycle {i}: volume {volume_id} is still in the live XML of {domain} after the detach answered")
        if i > 0:  # the first is the warm-up
            attach.append(a * 1000)
            detach.append(d * 1000)
    return attach, detach


def anchor_cycles(cinder, anchor, uri, domain, volume_id, cycles, work):
    """The bare libvirt call on an export of VOLUME_ID made through Cinder's attachment API."""
    a = cinder.call("POST", "/attachments", {"attachment": {"volume_uuid": volume_id, "instance_uuid": "anchor",
                                                            "connector": {"host": socket.gethostname()}}})
    data = a["attachment"]["connection_info"]["data"]
    alias = "ua-" + volume_id
    # What the controller's libvirt driver sends for a scsi disk (controller/virt/libvirt_driver.cpp).
    xml = (f"<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none' discard='unmap'/>"
           f"<source protocol='nbd' name={quoteattr(data['export'])}>"
           f"<host transport='unix' socket={quoteattr(data['socket'])}/></source>"
           f"<target dev='sdb' bus='scsi'/><serial>{escape(volume_id)}</serial><alias name={quoteattr(alias)}/>"
           f"<address type='drive' controller='0' bus='0' target='0' unit='1'/></disk>")
    path = os.path.join(work, "anchor-disk.xml")
    with open(path, "w") as f:
        f.write(xml)
    try:
        out = subprocess.run([anchor, uri, domain, path, alias, str(cycles + 1)], check=True, capture_output=True,
                             text=True, timeout=600).stdout
    except subprocess.CalledProcessError as e:
        sys.exit(f"{anchor}: exit {e.returncode}: {e.stderr.strip()}")
    finally:
        cinder.call("DELETE", "/attachments/" + a["attachment"]["id"])
    rows = [tuple(map(float, line.split())) for line in out.splitlines()][1:]  # the first is the warm-up
    return [r[0] for r in rows], [r[1] for r in rows]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state", required=True, help="the controller's state directory")
    p.add_argument("--server", required=True, help="the libvirt domain (name) to attach to")
    p.add_argument("--anchor", required=True, help="build/bench/libvirt_attach_anchor")
    p.add_argument("--uri", default="qemu:///system")
    p.add_argument("--cycles", type=int, default=20)
    args = p.parse_args()

    cinder = Api(args.state, "/v3/bench")
    nova = Api(args.state, "/v2.1/bench")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="volgate-nova-bench.") as work:
        for kind, encrypted in (("plain", False), ("encrypted", True)):
            vid = create_volume(cinder, "nova-bench-" + kind, encrypted)
            rows[("controller", kind)] = controller_cycles(nova, args.uri, args.server, vid, args.cycles)
            rows[("libvirt", kind)] = anchor_cycles(cinder, args.anchor, args.uri, args.server, vid, args.cycles, work)
            cinder.call("DELETE", "/volumes/" + vid)

    print(f"attach/detach through Nova's API on a TCG guest, scsi bus, {args.cycles} cycles each (ms)")
    print(f"{'row':<34}{'attach p50':>11}{'p90':>8}{'max':>8}{'detach p50':>12}{'p90':>8}{'max':>8}")
    names = {"controller": "controller (API call)", "libvirt": "bare libvirt (anchor)"}
    for kind in ("plain", "encrypted"):
        for who in ("controller", "libvirt"):
            att, det = rows[(who, kind)]
            print(f"{names[who] + ', ' + kind:<34}{percentile(att, 50):>11.1f}{percentile(att, 90):>8.1f}"
                  f"{max(att):>8.1f}{percentile(det, 50):>12.1f}{percentile(det, 90):>8.1f}{max(det):>8.1f}")
    for kind in ("plain", "encrypted"):
        (ca, cd), (la, ld) = rows[("controller", kind)], rows[("libvirt", kind)]
        print(f"controller overhead, {kind} (p50 minus anchor p50): attach "
              f"{percentile(ca, 50) - percentile(la, 50):.1f} ms, detach {percentile(cd, 50) - percentile(ld, 50):.1f} ms")


if __name__ == "__main__":
    main()
