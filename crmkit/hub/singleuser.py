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
  start (``pages_only``): a notebook's kernel in Lab lives as Lab keeps it;
* keeps a small preheated pool (:data:`HUB_POOLS`: one kernel for the addresses dashboard, none for the others),
  as crmkit's Voila does with its larger one: Voila's own pool (``voila_kernel_manager_factory``) around
  PageKernelManager, fitted to a server extension (:func:`pooled_kernel_manager`), and Voila's query socket under
  the server's base URL, where a pooled kernel waits for its page's request
  (:func:`crmkit.widgets.app.wait_for_voila_request`: the person's data and language are read then). A pooled
  kernel inherits the server's environment, so it runs in team mode as the person the server belongs to.

Not taken over from the standalone server: :class:`~crmkit.voila_app.ConsentHandler`: its redirect URI is one fixed
address in an app registration, which a per-person path ``/user/<name>/…`` is not, and its answer is written with
the owner's store, not the person's login.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from traitlets.config import Config

__all__ = ["EXTENSION", "HUB_POOLS", "VOILA_SETTINGS", "no_cdn_mathjax", "pooled_kernel_manager", "server_args"]

EXTENSION = "crmkit.hub.singleuser"
STOCK_EXTENSION = "voila.server_extension"
VOILA_SETTINGS = Path(__file__).resolve().parents[2] / "dashboards" / "voila.json"
# What of voila.json's VoilaConfiguration an extension honours (preheat and its kernel manager class are the app's).
_EXTENSION_KEYS = ("strip_sources", "show_tracebacks", "progressive_rendering", "template", "theme",
                   "file_allowlist", "file_denylist", "http_keep_alive_timeout")
_KERNEL_ID = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"  # as Voila's app routes its query socket
# Preheated kernels per dashboard in a person's server (paths under the home, as the page URLs name them). Small:
# each waits with the dashboard's imports done, ~170 MB resident per person whether they look or not (measured:
# tests/hub/test_hub_voila.py prints it).
HUB_POOLS: dict[str, dict[str, int]] = {"default": {"pool_size": 0}, "dashboards/addresses.ipynb": {"pool_size": 1}}

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
                                         **settings.get("MappingKernelManager", {})},
                   "HubPageKernelManager": {"kernel_pools_config": HUB_POOLS,
                                            **{k: v for k, v in settings.get("VoilaKernelManager", {}).items()
                                               if k == "fill_delay"}}})


_POOLED: type | None = None


def pooled_kernel_manager() -> type:
    """PageKernelManager with Voila's preheat pool (``voila_kernel_manager_factory``), fitted to a server extension.

    Voila's pool is written for its own app: its ``__init__`` reads the app's ``notebook_path`` and heats every
    notebook under the root at once (a person's whole home), and its page renderer reads the app's template paths
    and Voila configuration. Here nothing is heated until :meth:`heat` gets the render pages' own settings from the
    extension, and then only the notebooks :data:`HUB_POOLS` names."""
    global _POOLED
    if _POOLED is not None:
        return _POOLED
    from jupyter_core.utils import ensure_async
    from voila.notebook_renderer import NotebookRenderer
    from voila.utils import get_page_config
    from voila.voila_kernel_manager import voila_kernel_manager_factory

    from crmkit.voila_app import PageKernelManager

    base: Any = voila_kernel_manager_factory(PageKernelManager, True, 0)

    class HubPageKernelManager(base):  # type: ignore[misc,valid-type]
        def __init__(self, **kwargs: Any) -> None:
            PageKernelManager.__init__(self, **kwargs)  # not VoilaKernelManager's (above); its state, empty:
            self.notebook_data: dict[str, Any] = {}
            self._pools: dict[str, list[Any]] = {}
            self._pages: dict[str, Any] | None = None
            self._closing = False

        def fill_if_needed(self, *args: Any, **kwargs: Any) -> None:
            if not self._closing:  # a page that took a kernel at shutdown must not start a new one
                super().fill_if_needed(*args, **kwargs)

        async def shutdown_all(self, now: bool = False) -> None:
            """End the pool's kernels at once, then the pages' as the server ends them.

            A pooled kernel is busy waiting for its page, so it would not answer a shutdown request: Voila's own
            shutdown_all asks and kills only after the wait, while the spawner's signals end the server, and a
            kernel (a session of its own) outlives it. A refill under way is let finish (cancelled mid-start, its
            kernel could be left untracked), then killed; no new one starts (``_closing``)."""
            self._closing = True
            pools, self._pools = self._pools, {}
            for task in [t for pool in pools.values() for t in pool]:
                try:
                    kernel_id = (await task)["kernel_id"]
                except Exception as exc:  # a kernel that failed to start has nothing to end
                    self.log.info("crmkit: a pooled kernel had not started: %s", exc)
                    continue
                if kernel_id in self:
                    await ensure_async(PageKernelManager.shutdown_kernel(self, kernel_id, now=True))
            await ensure_async(PageKernelManager.shutdown_all(self, now=now))

        def heat(self, voila_configuration: Any, template_paths: list[str], settings: dict[str, Any]) -> None:
            """Fill the pools of :data:`HUB_POOLS`' notebooks that this server has, rendered as its pages are."""
            self._pages = {"voila_configuration": voila_configuration, "template_paths": template_paths,
                           "settings": settings}
            for name, pool in self.kernel_pools_config.items():
                if name != "default" and pool.get("pool_size", 0) > 0 and (Path(self.root_dir) / name).is_file():
                    self.fill_if_needed(delay=0, notebook_name=name)

        def _notebook_renderer_factory(self, notebook_path: str | None = None) -> Any:
            # As Voila's page handler renders a page without a pooled kernel (handler.py), with the same objects
            assert self._pages is not None, "heat() first"
            settings, voila = self._pages["settings"], self._pages["voila_configuration"]
            page_kwargs = {"base_url": self.parent.base_url, "settings": settings, "log": self.log,
                           "voila_configuration": voila}
            page_config = get_page_config(**page_kwargs)
            if voila.page_config_hook:
                page_config = voila.page_config_hook(page_config, **page_kwargs, notebook_path=notebook_path)
            return NotebookRenderer(
                voila_configuration=voila, traitlet_config=self.parent.config, notebook_path=notebook_path,
                template_paths=self._pages["template_paths"], config_manager=settings["config_manager"],
                contents_manager=settings["contents_manager"], base_url=self.parent.base_url,
                kernel_spec_manager=settings["kernel_spec_manager"], page_config=page_config,
                mathjax_config=settings.get("mathjax_config"), mathjax_url=settings.get("mathjax_url"))

    _POOLED = HubPageKernelManager
    return _POOLED


def _link_jupyter_server_extension(server_app: Any) -> None:
    """Runs before the server makes its kernel manager: the page-bound one with its pool, with voila.json's
    settings."""
    server_app.update_config(_dashboard_settings())
    configured = server_app.config.get("ServerApp", {}).get("kernel_manager_class")  # (its default needs the gateway)
    if configured is None:
        server_app.kernel_manager_class = pooled_kernel_manager()
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
    from jupyter_server.utils import url_path_join
    from tornado.routing import Rule
    from voila import server_extension
    from voila.request_info_handler import RequestInfoSocketHandler
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
    heat = getattr(server_app.kernel_manager, "heat", None)
    if heat is not None:  # the pooled PageKernelManager (not another, configured kernel manager)
        # A pooled kernel connects here (directly, not through the hub's proxy) and waits for its page's request
        query = url_path_join(server_app.base_url, "/voila/query/" + _KERNEL_ID)
        # Voila's pool tells its kernels where that is from its app's server_url, which a ServerApp lacks: the
        # server's base URL, /user/<name>/ (known only now: jupyterhub's extension sets it after ours is linked).
        server_app.server_url = server_app.base_url
        web_app.add_handlers(".*$", [(query, RequestInfoSocketHandler)])
        heat(pages[0].target_kwargs["voila_configuration"], pages[0].target_kwargs["template_paths"], web_app.settings)
