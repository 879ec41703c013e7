"""The README's "Use the sandbox from other tools" runs as written, against ``crmkit sandbox`` as a real process.

The section's first ```bash block is the sandbox's command line; the test runs it with the free-port flags
the section names (``--port 0 --https-port 0``), with HOME a fresh folder, so the default state folder and
the CA path it prints are the ones the section shows. The printed lines match its ```text block (port and
home folder aside). The second ```bash block's exports run in bash, and its ```python block runs in that
shell with ``python -c``, as a reader would paste it; the test is the person at the browser: it opens the
page the snippet prints (trusting the CA only), enters the code and signs in.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD
from tests.support.readme import OTHER_TOOLS, README, blocks, sections
from tests.support.sandbox import Browser

pytestmark = pytest.mark.sandbox

BIN = Path(sys.executable).parent  # the venv's bin: `crmkit` and `python` as the README's lines call them
FREE_PORTS = "--port 0 --https-port 0"
SHOWN_HOME, SHOWN_PORT = "/home/you", "8766"  # what the README's printed lines show
# What the README's exports set: nothing of the test process's own may stand in for them.
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "SSL_CERT_DIR")


def section() -> str:
    return sections(README.read_text(encoding="utf-8"))[OTHER_TOOLS]


def _env(home: Path, **extra: str) -> dict[str, str]:
    drop = ("CRMKIT_", "XDG_STATE_HOME", *CA_VARIABLES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "HOME": str(home), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra}


def _lines(stream: IO[str] | None) -> queue.Queue[str | None]:
    """The stream's lines as they come, then None at its end."""
    assert stream is not None
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@dataclass(frozen=True)
class Running:
    home: Path
    printed: list[str]
    https_url: str
    ca: str


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    text = section()
    assert f"`{FREE_PORTS}` picks free ports" in text
    command = blocks(text, "bash")[0].strip()
    assert command == "crmkit sandbox", command  # one line, the sandbox in the foreground
    home = tmp_path_factory.mktemp("readme-other-tools-home")
    log = (home / "sandbox.log").open("w")
    proc = subprocess.Popen([*shlex.split(command), *FREE_PORTS.split()], stdout=subprocess.PIPE, stderr=log,
                            stdin=subprocess.DEVNULL, text=True, env=_env(home), cwd=home)
    try:
        out = _lines(proc.stdout)
        printed: list[str] = []
        while not printed or not printed[-1].lstrip().startswith("CA file"):
            line = out.get(timeout=60)
            assert line is not None, f"crmkit sandbox exited after {printed}; see {log.name}"
            printed.append(line)
        found = dict(line.split("=", 1) for line in printed if line.startswith("CRMKIT_SANDBOX_"))
        yield Running(home, printed, found["CRMKIT_SANDBOX_HTTPS_URL"], found["CRMKIT_SANDBOX_CA"])
    finally:
        _stop(proc)
        log.close()


def test_the_printed_lines_are_the_ones_shown(running: Running) -> None:
    port = running.https_url.rsplit(":", 1)[1]
    [shown] = blocks(section(), "text")
    for line in shown.splitlines():
        assert line.replace(SHOWN_HOME, str(running.home)).replace(f":{SHOWN_PORT}/", f":{port}/") \
            .replace(f":{SHOWN_PORT}", f":{port}") in running.printed, (line, running.printed)
    # the CA sits in the default state folder under HOME, where the README's export points
    assert running.ca == str(running.home / ".local/state/crmkit/sandbox/tls/ca.pem")


def _run_snippet(running: Running, page: str) -> tuple[int, str, str]:
    """The exports and the Python block in one bash, as pasted; ``page``: 'printed' (the https page the snippet
    names) or 'http' (the same code at the http listener's /devicelogin, as the README offers)."""
    text = section()
    exports, [snippet] = blocks(text, "bash")[1], blocks(text, "python")
    script = f'{exports}\nexec python -c "$README_SNIPPET"\n'
    proc = subprocess.Popen(
        ["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=_env(running.home, README_SNIPPET=snippet, CRMKIT_SANDBOX_HTTPS_URL=running.https_url),
        cwd=running.home,
    )
    try:
        out = _lines(proc.stdout)
        message = out.get(timeout=60) or ""
        found = re.search(r"open the page (\S+) and enter the code (\S+) ", message)
        assert found, message
        uri, code = found.groups()
        assert uri == f"{running.https_url}/devicelogin", uri
        # the person at the browser: a browser that trusts the sandbox's CA (and nothing else for it)
        browser = Browser(verify=ssl.create_default_context(cafile=running.ca))
        try:
            if page == "http":
                http_url = next(line for line in running.printed if line.startswith("CRMKIT_SANDBOX_URL="))
                uri = f"{http_url.split('=', 1)[1]}/devicelogin"
            done = browser.device_login(uri, code, SANDBOX_DEFAULT_UPN)
            assert done.status_code == 200, done.text[:400]
        finally:
            browser.close()
        rest = list(iter(lambda: out.get(timeout=120), None))  # what it printed after the message, to its end
        assert proc.stderr is not None
        return proc.wait(30), "\n".join(rest), proc.stderr.read()
    finally:
        _stop(proc)


@pytest.mark.parametrize("page", ["printed", "http"])
def test_the_snippet_signs_in_and_calls_graph_as_written(running: Running, page: str) -> None:
    rc, out, err = _run_snippet(running, page)
    assert rc == 0, err[-3000:]
    assert out.strip() == "Anna Schmidt", (out, err[-2000:])


def test_the_password_and_user_it_names_are_the_sandbox_ones() -> None:
    text = section()
    assert SANDBOX_DEFAULT_UPN in text and f"`{SANDBOX_PASSWORD}`" in text
