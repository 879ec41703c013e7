"""Microsoft sign-in for crmkit: accounts per CRM user, the campaign sender, admin consent.

Entry point: ``m365 = Microsoft365(crm)``, then ``m365.accounts``, ``m365.campaign``,
``m365.consent_url()``, ``m365.graph()``. MSAL's error dicts become the typed
:class:`~crmkit.errors.AuthError` tree; tokens stay in per-user token caches on this machine
(encrypted where the OS offers it, else 0600 files in the 0700 ``CRMKIT_HOME``).
"""

from . import _redact
from ._cache import CacheFile
from ._errors import CONSUMER_TENANT_ID, SignInRequired, auth_error
from ._msal import DeviceSignIn, Identity
from .accounts import Accounts, M365Account, Microsoft365, print_prompt
from .campaign import ADMIN_RIGHTS, PASSWORD_FLOW_WARNING, CampaignAccount, CampaignAccountInfo, TestResult
from .consent import (
    ConsentResult,
    account_consent_url,
    admin_consent_url,
    classic_admin_consent_url,
    native_redirect_uri,
    parse_consent_redirect,
)

_redact.install()

__all__ = [
    "ADMIN_RIGHTS",
    "CONSUMER_TENANT_ID",
    "PASSWORD_FLOW_WARNING",
    "Accounts",
    "CacheFile",
    "CampaignAccount",
    "CampaignAccountInfo",
    "ConsentResult",
    "DeviceSignIn",
    "Identity",
    "M365Account",
    "Microsoft365",
    "SignInRequired",
    "TestResult",
    "account_consent_url",
    "admin_consent_url",
    "auth_error",
    "classic_admin_consent_url",
    "native_redirect_uri",
    "parse_consent_redirect",
    "print_prompt",
]
