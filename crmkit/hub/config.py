"""The hub's state folder and its ``jupyterhub_config.py``.

The folder is 0700 and each file in it 0600: the cookie secret, ``crypt_key`` (JUPYTERHUB_CRYPT_KEY: 32 random
bytes, hex; the auth state, i.e. each person's tokens, is encrypted with it), the client secret of the hub's app
registration (the sandbox's, when ``crmkit hub`` registered it), the hub's sqlite, its logs and the config.
The config names the secret files and reads them when JupyterHub loads it; no secret is written into it.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

from ..config import GRAPH_SCOPES

__all__ = ["HubConfig", "Tenant", "prepare_state", "server_python", "write_config", "write_secret"]

VENV_BIN = Path(sys.executable).parent  # jupyterhub, configurable-http-proxy, jupyterhub-singleuser beside python
VENV = VENV_BIN.parent
REPO = Path(__file__).resolve().parents[2]
# The sign-in asks for crmkit's delegated Graph permissions too: the hub's tokens are what a person's server sends
# with (crmkit/auth/hub_tokens.py), so nobody signs in a second time for Teams.
SCOPES = ("openid", "profile", "email", "offline_access", *GRAPH_SCOPES)
# At most this long between the hub's checks of a person's access token (oauthenticator's refresh_user: the
# tenant's user data with it; an expired one is exchanged with the refresh token). Short, so a server asking after
# Graph refused an expired token gets a refreshed one within seconds (JupyterHub's default: 300 s).
AUTH_REFRESH_AGE_S = 20
# How long a person's server trusts the hub's answer about a browser's cookie (--HubOAuth.cache_max_age): after
# /hub/logout an old server cookie is refused at most this long (JupyterHub's default: 300 s). Each browser
# request after that costs the server one call to the hub's API.
SERVER_AUTH_CACHE_S = 10


@dataclasses.dataclass(frozen=True)
class Tenant:
    """Where people sign in: the OAuth endpoints, the hub's client registration, and what TLS trusts."""

    name: str  # shown on the hub's login button: "Microsoft (sandbox)" / "Microsoft"
    authorize_url: str
    token_url: str
    userdata_url: str  # Graph /me: userPrincipalName and id (Entra's userinfo endpoint has neither)
    client_id: str
    client_secret_file: Path
    ca_file: str = ""  # "" = the system's CAs (Entra); the sandbox's own CA otherwise
    authority: str = ""  # https://HOST/TENANT: whose signed id_tokens crmkit verifies at each spawn (hooks.py)
    sandbox_url: str = ""  # the sandbox's loopback http URL: crmkit in the people's servers uses the same tenant
    logout_url: str = ""  # the tenant's end-session endpoint: /hub/logout ends the browser's session there too


@dataclasses.dataclass(frozen=True)
class HubConfig:
    state: Path
    tenant: Tenant
    port: int  # the public (proxy) port on 127.0.0.1
    hub_port: int  # the hub's own API, behind the proxy
    proxy_api_port: int
    home_base: Path
    python: Path  # what the people's servers run (server_python)
    allowed_users: tuple[str, ...] = ()  # empty: everybody the tenant signs in (see crmkit/hub/__init__.py)
    crm_db_file: Path | None = None  # 0600 file with the CRM owner's URL (crmkit hub --db); None: no CRM

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def callback_url(self) -> str:
        return f"{self.url}/hub/oauth_callback"


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_secret(path: Path, value: str) -> None:
    """Write ``value`` into a new 0600 file (replacing an older one), never through a wider mode."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.replace(tmp, path)


def prepare_state(state: Path) -> Path:
    """The 0700 state folder with its two generated secrets (made once, kept across restarts so cookies and
    the encrypted auth state stay readable) and the 0600 sqlite file; a file found wider is tightened."""
    _private_dir(state)
    for name in ("jupyterhub_cookie_secret", "crypt_key"):
        if not (state / name).exists():
            write_secret(state / name, secrets.token_hex(32))
    db = state / "jupyterhub.sqlite"
    if not db.exists():
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    for f in state.iterdir():
        if f.is_file():
            f.chmod(0o600)
    return state


def _reachable_by_others(path: Path) -> bool:
    """Whether any OS user can run/read ``path``: it and every folder above it have the others' x bit."""
    path = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def server_python(runtime: Path) -> Path:
    """The interpreter the people's servers run: this venv's, if everyone can reach it; else a small venv at
    ``runtime`` (world-readable) of a same-version system Python (``/usr/bin/python3.X``) whose one ``.pth`` adds
    this venv's site-packages (pyenv keeps its Python under /root, 0700). Same minor version, same ABI."""
    real = Path(os.path.realpath(sys.executable))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if _reachable_by_others(real) and _reachable_by_others(stdlib):
        return VENV_BIN / "python"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = runtime / "bin" / "python"
    if not python.exists():
        system = Path(f"/usr/bin/python{version}")
        if not system.exists() or not _reachable_by_others(system):
            raise RuntimeError(f"the people's servers need a Python {version} every OS user can run: {real} is "
                               f"not reachable by them and {system} is missing")
        subprocess.run([str(system), "-m", "venv", "--without-pip", str(runtime)], check=True, capture_output=True)
    site = Path(sysconfig.get_paths()["purelib"])  # this venv's site-packages
    pth = runtime / "lib" / f"python{version}" / "site-packages" / "crmkit-venv.pth"
    pth.write_text(f"import site; site.addsitedir({str(site)!r})\n")
    for root, dirs, files in os.walk(runtime):
        for n in (root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)):
            if not os.path.islink(n):
                os.chmod(n, os.stat(n).st_mode | stat.S_IROTH | (stat.S_IXOTH if os.path.isdir(n) else 0))
    runtime.chmod(0o755)
    return python


def write_config(cfg: HubConfig) -> Path:
    """Write ``jupyterhub_config.py`` (0600) for ``cfg``; regenerated at every start (ports may change)."""
    t = cfg.tenant
    seeds = [str(REPO / d) for d in ("notebooks", "dashboards") if (REPO / d).is_dir()]
    allow = (f"A.allowed_users = set({sorted(cfg.allowed_users)!r})" if cfg.allowed_users else "A.allow_all = True")
    # After the hub's logout, the tenant's: else auto_login signs the next person at this browser straight back in
    # as the last one (the tenant still knows the browser), without a password.
    logout = f"A.logout_redirect_url = {t.logout_url!r}\n" if t.logout_url else ""
    text = f'''\
# jupyterhub_config.py written by `crmkit hub` (crmkit/hub/config.py) at every start: edit crmkit, not this.
# No secret is in this file: each is read from its 0600 file in this 0700 folder when JupyterHub loads it.
from pathlib import Path

from crmkit.hub.hooks import pre_spawn
from crmkit.hub.singleuser import server_args
from crmkit.hub.spawner import hub_username

STATE = Path({str(cfg.state)!r})


def _read(path):
    return Path(path).read_text().strip()


c = get_config()  # noqa: F821 -- JupyterHub's config loader provides it

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {cfg.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {cfg.hub_port}
c.JupyterHub.db_url = "sqlite:///" + str(STATE / "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
c.CryptKeeper.keys = [_read(STATE / "crypt_key")]  # not the JUPYTERHUB_CRYPT_KEY variable: the proxy inherits those
c.JupyterHub.cleanup_servers = True  # stopping the hub stops everybody's server
c.JupyterHub.implicit_spawn_seconds = 0.5  # a link to a stopped server spawns it (else 424)

c.JupyterHub.proxy_class = "configurable-http-proxy"
c.ConfigurableHTTPProxy.command = [{str(VENV_BIN / "configurable-http-proxy")!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{cfg.proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")

c.JupyterHub.authenticator_class = "crmkit.hub.logout.CrmkitAuthenticator"  # generic-oauth; logout ends access
A = c.GenericOAuthenticator
A.login_service = {t.name!r}
A.authorize_url = {t.authorize_url!r}
A.token_url = {t.token_url!r}
A.userdata_url = {t.userdata_url!r}
A.client_id = {t.client_id!r}
A.client_secret = _read({str(t.client_secret_file)!r})
A.oauth_callback_url = {cfg.callback_url!r}
A.scope = {list(SCOPES)!r}
A.username_claim = hub_username  # the account's local part, OS-safe (crmkit/hub/spawner.py)
A.enable_auth_state = True
A.auto_login = True
{logout}A.auth_refresh_age = {AUTH_REFRESH_AGE_S}
# A person's server reads its person's current tokens from the hub (GET /hub/api/users/NAME, crmkit/auth/
# hub_tokens.py): the server's token cannot exceed its owner's scopes, so both roles need admin:auth_state!user;
# "!user" is the owner only, so another person's server gets nothing.
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "admin:auth_state!user"]}},
    {{"name": "server", "scopes": ["users:activity!user", "access:servers!server", "admin:auth_state!user"]}},
]
{allow}
'''
    if t.ca_file:
        text += f'A.http_request_kwargs = {{"ca_certs": {t.ca_file!r}}}\n'
    # crmkit's Teams in the servers reaches the tenant the hub signs people in at (its Graph, with the hub's tokens)
    sandbox_env = f'\n    "CRMKIT_SANDBOX_URL": {t.sandbox_url!r},' if t.sandbox_url else ""
    text += f'''
c.JupyterHub.spawner_class = "crmkit.hub.spawner.CrmkitSpawner"
c.CrmkitSpawner.home_base = {str(cfg.home_base)!r}
c.CrmkitSpawner.seed_dirs = {seeds!r}
c.CrmkitSpawner.ca_file = {t.ca_file!r}
# each person's own CRM login (crmkit/hub/hooks.py): the owner's URL stays in its 0600 file, read by the hub only
c.CrmkitSpawner.crm_db_file = {str(cfg.crm_db_file or "")!r}
c.CrmkitSpawner.id_authority = {t.authority!r}
c.CrmkitSpawner.id_client_id = {t.client_id!r}
c.Authenticator.refresh_pre_spawn = True  # tokens refreshed at the tenant first: a disabled account gets no server
c.Spawner.cmd = [{str(cfg.python)!r}, "-m", "jupyterhub.singleuser"]
# crmkit's venv (world-readable) for the people's servers: its Jupyter data, config (the voila extension), Lab
c.Spawner.environment = {{
    "PATH": {f"{cfg.python.parent}:{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"!r},
    "JUPYTER_PATH": {str(VENV / "share" / "jupyter")!r},
    "JUPYTER_CONFIG_PATH": {str(VENV / "etc" / "jupyter")!r},
    "JUPYTERLAB_DIR": {str(VENV / "share" / "jupyter" / "lab")!r},{sandbox_env}
}}
c.Spawner.notebook_dir = "~"
c.Spawner.default_url = "/lab"
c.Spawner.pre_spawn_hook = pre_spawn
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 90
c.Spawner.args = ["--HubOAuth.cache_max_age={SERVER_AUTH_CACHE_S}"]  # an old server cookie dies soon after logout
c.Spawner.args.extend(server_args())  # crmkit's Voila pages (template, page kernels, voila.json): hub/singleuser.py
'''
    path = cfg.state / "jupyterhub_config.py"
    write_secret(path, text.rstrip("\n"))  # 0600 like the rest, though nothing in it is secret
    return path
