"""Two zones (and a witness) on one machine: Linux network namespaces on a private bridge.

::

    root namespace (pytest, HAProxy on 127.0.0.1)  10.231.S.1 ─┐
    zone a  (namespace <prefix>a)                   10.231.S.10 ├─ bridge br0 in <prefix>s
    zone b  (namespace <prefix>b)                   10.231.S.20 │  (the "switch" namespace)
    zone c  (namespace <prefix>c, a witness)        10.231.S.30 ┘

Each zone is a namespace joined to the bridge by a veth pair; the bridge lives in a namespace
of its own, so no forwarding or firewall setting of the machine changes. :meth:`Zones.cut`
takes a zone's port on the bridge down: its processes keep running but nothing reaches them
and nothing leaves (packets are dropped, as when a zone's network fails; connects time out
rather than being refused). :meth:`Zones.restore` brings it back. All traffic stays inside
these namespaces and the root namespace's end of one veth pair; :meth:`Zones.destroy`
removes every namespace and link it made, and is safe to call twice or after a failed start.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

ZONE_HOSTS = {"a": 10, "b": 20, "c": 30}


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def namespaces_available() -> str | None:
    """``None`` when this process may make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"bzprobe{os.getpid() % 100000}"
    try:
        run("ip", "netns", "add", probe)
    except (OSError, subprocess.CalledProcessError) as error:
        return f"ip netns add failed: {error}"
    run("ip", "netns", "del", probe)
    return None


@dataclass
class Zones:
    """Namespaces ``<prefix>a``, ``<prefix>b``, ``<prefix>c`` and the switch ``<prefix>s``."""

    prefix: str = field(default_factory=lambda: f"bz{os.getpid() % 100000}")
    made: list[str] = field(default_factory=list)
    host_link: str | None = None

    @property
    def subnet(self) -> str:
        # per run, so two runs on one machine do not share a route in the root namespace
        return f"10.231.{20 + os.getpid() % 200}"

    @property
    def host_ip(self) -> str:
        return f"{self.subnet}.1"

    def ip(self, zone: str) -> str:
        return f"{self.subnet}.{ZONE_HOSTS[zone]}"

    def namespace(self, zone: str) -> str:
        return f"{self.prefix}{zone}"

    def in_zone(self, zone: str, command: Sequence[str]) -> list[str]:
        """``command`` run inside ``zone``'s namespace (``ip netns exec`` execs it: the
        process id is the command's own)."""
        return ["ip", "netns", "exec", self.namespace(zone), *command]

    def create(self) -> None:
        switch = self.namespace("s")
        self._add_namespace(switch)
        run("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", switch, "link", "set", "br0", "up")
        for zone in ZONE_HOSTS:
            namespace = self.namespace(zone)
            self._add_namespace(namespace)
            inside, port = f"{self.prefix}{zone}0", f"{self.prefix}{zone}1"
            run("ip", "link", "add", inside, "type", "veth", "peer", "name", port)
            run("ip", "link", "set", inside, "netns", namespace)
            run("ip", "link", "set", port, "netns", switch)
            run("ip", "-n", namespace, "link", "set", inside, "name", "eth0")
            run("ip", "-n", namespace, "addr", "add", f"{self.ip(zone)}/24", "dev", "eth0")
            run("ip", "-n", namespace, "link", "set", "eth0", "up")
            run("ip", "-n", switch, "link", "set", port, "master", "br0")
            run("ip", "-n", switch, "link", "set", port, "up")
        host, port = f"{self.prefix}h0", f"{self.prefix}h1"
        run("ip", "link", "add", host, "type", "veth", "peer", "name", port)
        self.host_link = host
        run("ip", "link", "set", port, "netns", switch)
        run("ip", "-n", switch, "link", "set", port, "master", "br0")
        run("ip", "-n", switch, "link", "set", port, "up")
        run("ip", "addr", "add", f"{self.host_ip}/24", "dev", host)
        run("ip", "link", "set", host, "up")

    def cut(self, zone: str) -> None:
        run("ip", "-n", self.namespace("s"), "link", "set", f"{self.prefix}{zone}1", "down")

    def restore(self, zone: str) -> None:
        run("ip", "-n", self.namespace("s"), "link", "set", f"{self.prefix}{zone}1", "up")

    def destroy(self) -> None:
        """Delete what :meth:`create` made (deleting a namespace deletes its links; the
        root end of the host pair is deleted by name)."""
        if self.host_link is not None:
            subprocess.run(["ip", "link", "del", self.host_link], capture_output=True,
                           timeout=30, check=False)
            self.host_link = None
        for namespace in reversed(self.made):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30,
                           check=False)
        self.made.clear()

    def _add_namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.made.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
