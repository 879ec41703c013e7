"""The people's single-user servers (``crmkit hub``): their Voila serves the dashboards as crmkit's own Voila does.

A person's server is ``jupyterhub.singleuser`` (JupyterLab for the notebooks) with Voila 0.5 as a server extension
for the dashboards. Stock, that extension renders with Voila's ``lab`` template, whose pages link Font Awesome from
a public CDN (a third party told who looks at personal data, and no icons offline), reads no ``dashboards/voila.json``
(the server's working folder is the home) and leaves a kernel behind for every page view whose unload request
lacks the ``_xsrf`` cookie. This module is a jupyter_server extension that takes its place (``server_args``: the
hub's ``c.Spawner.args`` switch Voila's own off and this one on). It loads Voila's extension and then:

* puts ``crmkit/voila_template/`` first on the template path of the render and tree pages (as
  :class:`crmkit.voila_app.CrmkitVoila` does), with the loading text's words
  (:func:`~crmkit.voila_app.loading_resources`);
* serves dashboard pages with :class:`~crmkit.voila_app.DashboardHandler` (the ``_xsrf`` cookie for the unload beacon,
  the ``crmkit_lang`` cookie, the kernel limit);
* applies ``dashboards/voila.json``'s ``VoilaConfiguration`` (sources stripped, no tracebacks), its
  ``PageKernelManager`` settings and its idle culling (a page fetched without a browser never connects), with
  :class:`~crmkit.voila_app.PageKernelManager` as the server's kernel manager limited to the kernels Voila pages
  start (``pages_only``): a notebook's kernel in Lab lives as Lab keeps it.

Not taken over from the standalone server: the preheated kernel pool (Voila has it only as an application, not as
an extension; per person it would also keep a rendered kernel per dashboard running), and
:class:`~crmkit.voila_app.ConsentHandler`: its redirect URI is one fixed address in an app registration, which a
per-person path ``/user/<name>/…`` is not, and its answer is written with the owner's store, not the person's login.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from traitlets.config import Config

__all__ = ["EXTENSION", "VOILA_SETTINGS", "no_cdn_mathjax", "server_args"]

EXTENSION = "crmkit.hub.singleuser"
STOCK_EXTENSION = "voila.server_extension"
VOILA_SETTINGS = Path(__file__).resolve().parents[2] / "dashboards" / "voila.json"
# What of voila.json's VoilaConfiguration an extension honours (preheat and its kernel manager class are the app's).
_EXTENSION_KEYS = ("strip_sources", "show_tracebacks", "progressive_rendering", "template", "theme",
                   "file_allowlist", "file_denylist", "http_keep_alive_timeout")

log = logging.getLogger(__name__)


def server_args() -> list[str]:
    """The single-user server's command-line config (``c.Spawner.args``): Voila's stock server extension off, this
    one on (a command-line entry wins over the ``jupyter_server_config.d`` file that enables Voila's)."""
    return [f"--ServerApp.jpserver_extensions={STOCK_EXTENSION}=False",
            f"--ServerApp.jpserver_extensions={EXTENSION}=True"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": EXTENSION}]


def _dashboard_settings(path: Path = VOILA_SETTINGS) -> Config:
    """The parts of ``dashboards/voila.json`` that apply to a server extension, as traitlets config."""
    settings = json.loads(path.read_text(encoding="utf-8"))
    voila = settings.get("VoilaConfiguration", {})
    return Config({"VoilaConfiguration": {k: v for k, v in voila.items() if k in _EXTENSION_KEYS},
                   "PageKernelManager": {**settings.get("PageKernelManager", {}), "pages_only": True,
                                         # culling: for the pages' kernels only (pages_only)
                                         **settings.get("MappingKernelManager", {})}})


def _link_jupyter_server_extension(server_app: Any) -> None:
    """Runs before the server makes its kernel manager: the page-bound one, with voila.json's settings."""
    from crmkit.voila_app import PageKernelManager

    server_app.update_config(_dashboard_settings())
    configured = server_app.config.get("ServerApp", {}).get("kernel_manager_class")  # (its default needs the gateway)
    if configured is None:
        server_app.kernel_manager_class = PageKernelManager
    else:  # somebody configured another one on purpose: keep it (Voila's kernels then live until culled)
        log.warning("crmkit: keeping the configured kernel manager %s", configured)


def no_cdn_mathjax(page_config: dict[str, Any], **_: Any) -> dict[str, Any]:
    """``VoilaConfiguration.page_config_hook``: no MathJax from a CDN. Served as an extension, Voila's page config
    names MathJax 2 on a public CDN (``fullMathjaxUrl``), which its page script loads the first time an output is
    typeset (the dashboards' error boxes were); "null" for both is that script's own "no MathJax"."""
    page_config["fullMathjaxUrl"] = page_config["mathjaxConfig"] = "null"
    return page_config  # the tree handler uses the dict it passed, the page handler the one returned


def _rules(web_app: Any) -> Iterator[Any]:
    """Every handler rule of the tornado application (inside its per-host routers)."""
    for host_rule in web_app.default_router.rules:
        yield from getattr(host_rule.target, "rules", ())


def _load_jupyter_server_extension(server_app: Any) -> None:
    from tornado.routing import Rule
    from voila import server_extension
    from voila.tornado.handler import TornadoVoilaHandler

    from crmkit.voila_app import TEMPLATE_DIR, DashboardHandler, loading_resources

    voila = server_app.config.VoilaConfiguration
    voila.resources = loading_resources(voila.get("resources"))
    voila.page_config_hook = no_cdn_mathjax
    server_extension._load_jupyter_server_extension(server_app)
    web_app = server_app.web_app
    # The tree/listing and error pages render through this Jinja env; its loader keeps its own copy of the paths.
    web_app.settings["voila_jinja2_env"].loader.searchpath.insert(0, str(TEMPLATE_DIR))
    pages = [r for r in _rules(web_app) if isinstance(r, Rule) and r.target is TornadoVoilaHandler]
    if len(pages) != 1:  # a Voila release that routes its pages otherwise: refuse rather than serve stock pages
        raise RuntimeError(f"crmkit: expected one Voila render route, found {len(pages)}")
    pages[0].target = DashboardHandler
    # The same list object reaches the notebook renderer (nbconvert exporter) of every page.
    pages[0].target_kwargs["template_paths"].insert(0, str(TEMPLATE_DIR))
    server_app.log.info("crmkit: Voila serves the dashboards with %s first on its template path", TEMPLATE_DIR)
