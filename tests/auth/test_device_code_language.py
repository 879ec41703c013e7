"""crmkit asks for Microsoft's device-code message in the CRM user's language (Entra's ``?mkt=``).

The device authorization request carries no ``ui_locales`` and Entra returns no
``verification_uri_complete``, so the sign-in page follows the browser's Accept-Language; the
message crmkit prints outside widgets (``print_prompt``) is the one part the protocol localises.
"""

from __future__ import annotations

import pytest

from crmkit.auth import Microsoft365

pytestmark = pytest.mark.sandbox


@pytest.mark.parametrize(("lang", "start"), [("de", "Um sich anzumelden, öffnen Sie die Seite "),
                                             ("en", "To sign in, use a web browser to open the page ")])
def test_device_code_message_in_the_users_language(m365: Microsoft365, lang: str, start: str) -> None:
    m365.crm.set_user_setting("language", lang)
    sign_in = m365.accounts.start_sign_in(timeout=5)
    try:
        assert sign_in.message.startswith(start), sign_in.message
        assert sign_in.user_code in sign_in.message and sign_in.verification_uri in sign_in.message
    finally:
        sign_in.cancel()
