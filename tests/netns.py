"""Linux network namespaces for several-host tests (iproute2): one namespace per "host", each joined to a
hub namespace by its own veth pair (a /24 per link, the hub at .1), so cutting one link isolates one
host and nothing else. Root only; everything is removed by `close`, whatever happened."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Link:
    """One host's link to the hub: the hub's address on it and the hub-side interface (cut it to isolate)."""

    hub_addr: str
    host_addr: str
    hub_dev: str


@dataclass
class NetLab:
    """A hub namespace plus hosts; names are unique per lab (a random tag), so labs never collide."""

    tag: str = field(default_factory=lambda: "tf" + secrets.token_hex(3))
    net: int = field(default_factory=lambda: 100 + secrets.randbelow(150))
    namespaces: list[str] = field(default_factory=list)
    root_devs: list[str] = field(default_factory=list)
    links: dict[str, Link] = field(default_factory=dict)

    @property
    def hub(self) -> str:
        return f"{self.tag}hub"

    def open(self) -> NetLab:
        if shutil.which("ip") is None:
            pytest.fail("iproute2 (`ip`) is required for the network-namespace test", pytrace=False)
        self._netns(self.hub)
        return self

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str) -> Link:
        """A host namespace `<tag><name>` (or the root namespace for name "root") linked to the hub."""
        index = len(self.links) + 1
        hub_dev, host_dev = f"{self.tag}{index}h", f"{self.tag}{index}c"
        _ip("link", "add", hub_dev, "type", "veth", "peer", "name", host_dev)
        if name == "root":
            self.root_devs.append(host_dev)
        else:
            self._netns(self.ns(name))
            _ip("link", "set", host_dev, "netns", self.ns(name))
        _ip("link", "set", hub_dev, "netns", self.hub)
        link = Link(f"10.{self.net}.{index}.1", f"10.{self.net}.{index}.2", hub_dev)
        _ip("-n", self.hub, "addr", "add", f"{link.hub_addr}/24", "dev", hub_dev)
        _ip("-n", self.hub, "link", "set", hub_dev, "up")
        where = [] if name == "root" else ["-n", self.ns(name)]
        _ip(*where, "addr", "add", f"{link.host_addr}/24", "dev", host_dev)
        _ip(*where, "link", "set", host_dev, "up")
        self.links[name] = link
        return link

    def ns(self, name: str) -> str:
        return self.hub if name == "hub" else f"{self.tag}{name}"

    def exec_argv(self, name: str, argv: list[str]) -> list[str]:
        """`argv` run inside host `name`'s namespace (`ip netns exec` execs it: the same pid)."""
        return ["ip", "netns", "exec", self.ns(name), *argv]

    def cut(self, name: str) -> None:
        """Take host `name`'s link down at the hub: its packets go nowhere (no reset, like a pulled cable)."""
        _ip("-n", self.hub, "link", "set", self.links[name].hub_dev, "down")

    def close(self) -> None:
        for dev in self.root_devs:
            subprocess.run(["ip", "link", "del", dev], capture_output=True, check=False, timeout=30)
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False, timeout=30)
