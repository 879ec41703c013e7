"""``python -m crmkit.sandbox`` / ``crmkit sandbox``: run the sandbox tenant on loopback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .core import IdentitySettings
from .faults import FaultConfig
from .throttle import Limits


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="plain-http port, the one crmkit's own transport uses; "
                   "0 picks a free one (default 8765)")
    p.add_argument("--state", default=None, help="state directory (DuckDB file + signing key); default "
                   "$CRMKIT_SANDBOX_STATE or ~/.local/state/crmkit/sandbox")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--https-port", type=int, default=8766, metavar="PORT",
                     help="https port beside the http one (0 picks a free one; default 8766), with a certificate "
                     "from the state folder's own CA, for clients that need an https authority (msal, "
                     "azure-identity, msgraph-sdk); prints the CA file to trust")
    tls.add_argument("--no-https", dest="https_port", action="store_const", const=None,
                     help="serve plain http only")
    p.add_argument("--reset", action="store_true", help="start from a freshly seeded tenant")
    g = p.add_argument_group("throttling (Teams limits for posting chat messages)")
    g.add_argument("--chat-rps-per-app", type=float, default=20.0, help="per app per tenant (default 20)")
    g.add_argument("--chat-rps-per-chat", type=float, default=1.0, help="per chat (default 1)")
    g.add_argument("--no-throttle", action="store_true", help="disable throttling")
    f = p.add_argument_group("fault injection (Graph endpoints)")
    f.add_argument("--fault-rate", type=float, default=0.0, help="probability of a random error status")
    f.add_argument("--fault-statuses", default="429,500,502,503,504", help="comma-separated statuses")
    f.add_argument("--latency-ms", type=float, default=0.0, help="added latency per request")
    f.add_argument("--drop-rate", type=float, default=0.0, help="probability of dropping the connection")
    f.add_argument("--timeout-after-commit-rate", type=float, default=0.0,
                   help="probability of committing a write and never answering")
    f.add_argument("--fault-seed", type=int, default=None, help="random seed for faults")
    i = p.add_argument_group("identity")
    i.add_argument("--token-lifetime", type=float, default=3599, help="access token lifetime in seconds")
    i.add_argument("--device-code-interval", type=int, default=5, help="device code polling interval (s)")
    return p


def run_from_args(args: argparse.Namespace) -> int:
    from .server import run

    limits = Limits(enabled=not args.no_throttle, chat_post_per_app_per_s=args.chat_rps_per_app,
                    chat_post_per_chat_per_s=args.chat_rps_per_chat)
    faults = FaultConfig.from_dict({
        "rate": args.fault_rate, "statuses": [int(s) for s in args.fault_statuses.split(",") if s.strip()],
        "latency_ms": args.latency_ms, "drop_rate": args.drop_rate,
        "timeout_after_commit_rate": args.timeout_after_commit_rate, "seed": args.fault_seed,
    })
    settings = IdentitySettings(access_token_lifetime_s=args.token_lifetime,
                                device_code_interval_s=args.device_code_interval)
    try:
        run(args.host, args.port, args.state, limits=limits, faults=faults, settings=settings, reset=args.reset,
            https_port=args.https_port)
    except KeyboardInterrupt:
        pass
    return 0


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``crmkit sandbox`` on the main CLI's subparsers; the handler is ``args.func``."""
    p = subparsers.add_parser("sandbox", help="run the local sandbox tenant (identity + Graph + Teams view)")
    configure_parser(p)
    p.set_defaults(func=run_from_args)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..errors import CrmkitError

    parser = configure_parser(argparse.ArgumentParser(prog="crmkit sandbox", description=__doc__))
    try:
        return run_from_args(parser.parse_args(argv))
    except CrmkitError as exc:  # e.g. a port in use: one line, as the crmkit CLI prints its errors
        print(f"crmkit sandbox: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
