"""RabbitMQ brokers of the tests' own: one node, or a three-node cluster, on loopback.

Each node runs Debian's RabbitMQ from `/usr/lib/rabbitmq/bin` (the `/usr/sbin` wrapper switches
to the system's rabbitmq user and data) with its own node name, AMQP and distribution ports, a
private HOME holding its own Erlang cookie, and a private epmd port, so the machine's broker
(5672, 25672, epmd 4369) is never touched. No plugins are enabled (`enabled_plugins` is `[].`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.embedded_mongo import free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
EPMD = shutil.which("epmd") or "/usr/bin/epmd"


class BrokerError(RuntimeError):
    pass


@dataclass
class Node:
    name: str  # e.g. "sr1a2b3c-1@localhost"
    port: int
    dist_port: int
    base: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"


@dataclass
class Brokers:
    """`size` nodes under `base`; `start()` boots them (and clusters them when more than one)."""

    base: Path
    size: int = 3
    epmd_port: int = field(default_factory=free_port)
    nodes: list[Node] = field(default_factory=list)
    _epmd: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        tag = secrets.token_hex(3)
        for i in range(1, self.size + 1):
            self.nodes.append(Node(f"sr{tag}-{i}@localhost", free_port(), free_port(), self.base / f"n{i}"))
        home = self.base / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (self.base / "env.conf").write_text("")
        for node in self.nodes:
            node.base.mkdir(parents=True, exist_ok=True)
            (node.base / "enabled_plugins").write_text("[].\n")
            (node.base / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{node.port}\n"
                "disk_free_limit.absolute = 50MB\n"
                "log.console = false\n"
            )

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: what `STRONGROOM_AMQP_URL` takes."""
        return ",".join(node.url for node in self.nodes)

    def _env(self, node: Node | None = None) -> dict[str, str]:
        env = {**os.environ, "HOME": str(self.base / "home"), "ERL_EPMD_PORT": str(self.epmd_port),
               "RABBITMQ_CONF_ENV_FILE": str(self.base / "env.conf")}
        if node is not None:
            env |= {
                "RABBITMQ_NODENAME": node.name, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node.port), "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_CONFIG_FILE": str(node.base / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.base / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"), "RABBITMQ_LOG_BASE": str(node.base / "log"),
            }
        return env

    def ctl(self, node: Node, *args: str, timeout: float = 120.0) -> str:
        done = subprocess.run([CTL, "-n", node.name, *args], env=self._env(), capture_output=True, timeout=timeout)
        if done.returncode != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} on {node.name}: {done.stderr.decode()[-1500:]}")
        return done.stdout.decode()

    def start(self) -> Brokers:
        self._epmd = subprocess.Popen([EPMD, "-port", str(self.epmd_port)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        for node in self.nodes:
            self.launch(node)
        for node in self.nodes:
            self.await_started(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        return self

    def launch(self, node: Node) -> None:
        log = open(node.base / "server.out", "ab")  # noqa: SIM115 - kept open for the node's life
        node.process = subprocess.Popen([SERVER], env=self._env(node), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def await_started(self, node: Node, timeout: float = 120.0) -> None:
        """Until the node runs RabbitMQ (await_startup refuses a node not yet known to epmd: retried)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ctl(node, "await_startup", "--timeout", str(int(timeout)), timeout=timeout + 30)
                return
            except BrokerError:
                if node.process is not None and node.process.poll() is not None:
                    raise BrokerError(f"{node.name} exited: {(node.base / 'server.out').read_text()[-1500:]}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def kill(self, node: Node) -> None:
        """SIGKILL the node's Erlang VM (its whole process group): no goodbye to its peers or clients."""
        if node.process is None:
            raise BrokerError(f"{node.name} is not running")
        os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=30)
        node.process = None

    def restart(self, node: Node) -> None:
        self.launch(node)
        self.await_started(node)

    def stop_node(self, node: Node) -> None:
        """A clean stop (the node tells its peers and closes its clients' connections)."""
        self.ctl(node, "stop")
        if node.process is not None:
            node.process.wait(timeout=60)
            node.process = None

    def queues(self, node: Node | None = None) -> list[dict[str, str]]:
        """name, type, leader and members of every queue (quorum queues name their leader)."""
        out = self.ctl(node or self.nodes[0], "list_queues", "name", "type", "leader", "members", "messages",
                       "-q", "--formatter", "json")
        import json

        return json.loads(out)

    def node_named(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def close(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait(timeout=30)
                node.process = None
        if self._epmd is not None:
            self._epmd.terminate()
            self._epmd.wait(timeout=10)
