"""Keep secrets out of MSAL's debug logs.

MSAL redacts passwords and refresh tokens in its token-cache debug event, but not the device
code of a pending device-code sign-in (msal 1.39), which someone watching the log could redeem
before the user finishes. This filter masks secret fields in every msal logger's records.
"""

from __future__ import annotations

import logging
import re

__all__ = ["install"]

_KEYS = ("access_token", "refresh_token", "id_token", "device_code", "password", "client_secret",
         "client_assertion", "assertion", "code")
_JSON = re.compile(r'("(?:%s)"\s*:\s*)"[^"]*"' % "|".join(_KEYS))  # noqa: UP031 - a regex template
_FORM = re.compile(r"(\b(?:%s)=)[^&\s'\"]+" % "|".join(_KEYS))  # noqa: UP031


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's problem, not ours
            return True
        redacted = _FORM.sub(r"\1********", _JSON.sub(r'\1"********"', message))
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_FILTER = RedactSecrets()


def install() -> None:
    """Attach the filter to every msal / msal_extensions logger that exists now (idempotent)."""
    import msal  # noqa: F401 - its modules create their loggers on import
    import msal_extensions  # noqa: F401

    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("msal", "msal_extensions")]
    for name in ["msal", *names]:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
