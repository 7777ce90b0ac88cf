"""A software TPM 2.0 for tests: Debian's `swtpm` on free local ports, its state in a test's directory.

`SoftwareTpm(state_dir).start()` runs `swtpm socket --tpm2` with a TCP data port P and control port
P + 1 (the tpm2-tools `swtpm` TCTI expects them adjacent); `tcti` names it for tpm2-tools.
`restart()` stops it and starts it again on the same ports with the same state: the TPM sees a
reboot (TPM2_Startup(CLEAR) after a reset: resetCount grows, persistent keys stay).
`manufacture(state_dir, ca_dir)` provisions the state first as a vendor does (swtpm_setup): an RSA
EK at 0x81010001 with its certificate in NV index 0x01c00002, issued by a local CA kept in
`ca_dir` (root `swtpm-localca-rootca-cert.pem`, intermediate `issuercert.pem`).

`running_swtpm(state_dir)` starts one for a `with` block (a fixture's body) and always stops it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_SECONDS = 10.0


def _adjacent_free_ports() -> int:
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two adjacent free TCP ports")


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


class SoftwareTpm:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.state_dir.parent / f"{self.state_dir.name}.log"

    @property
    def tcti(self) -> str:
        assert self.port is not None, "the software TPM is not started"
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self) -> SoftwareTpm:
        for _ in range(5):
            port = self.port or _adjacent_free_ports()
            if self._launch(port):
                self.port = port
                return self
        raise RuntimeError(f"swtpm did not start; see {self.log}")

    def _launch(self, port: int) -> bool:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state_dir}",
                 "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                 "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                 "--flags", "not-need-init,startup-clear"],
                stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False   # most likely a port taken meanwhile
            if _listening(port):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        """A reboot of the machine: the TPM starts again from its saved state."""
        self.stop()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._launch(self.port or _adjacent_free_ports()):
                return
            time.sleep(0.1)
        raise RuntimeError(f"swtpm did not restart; see {self.log}")


def manufacture(state_dir: Path, ca_dir: Path) -> None:
    """Provision a TPM state with an RSA EK and its certificate, as `swtpm_setup` does for a vendor."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ca_dir.mkdir(parents=True, exist_ok=True)
    localca_conf = ca_dir / "swtpm-localca.conf"
    localca_conf.write_text(f"statedir = {ca_dir}\nsigningkey = {ca_dir}/signkey.pem\n"
                            f"issuercert = {ca_dir}/issuercert.pem\ncertserial = {ca_dir}/certserial\n")
    (ca_dir / "swtpm-localca.options").write_text("--platform-manufacturer Strongroom\n--platform-model test\n"
                                                  "--platform-version 1\n")
    setup_conf = ca_dir / "swtpm_setup.conf"
    setup_conf.write_text(f"create_certs_tool = {shutil.which('swtpm_localca')}\n"
                          f"create_certs_tool_config = {localca_conf}\n"
                          f"create_certs_tool_options = {ca_dir}/swtpm-localca.options\n"
                          "active_pcr_banks = sha256\n")
    subprocess.run(["swtpm_setup", "--tpm2", "--tpmstate", str(state_dir), "--config", str(setup_conf),
                    "--create-ek-cert", "--lock-nvram", "--overwrite", "--rsa-keysize", "2048"],
                   check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def running_swtpm(state_dir: Path) -> Iterator[SoftwareTpm]:
    """A started software TPM, stopped on exit."""
    tpm = SoftwareTpm(state_dir).start()
    try:
        yield tpm
    finally:
        tpm.stop()
