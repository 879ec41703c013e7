"""»Im CRM öffnen«: the deep link's URL from the setting, and what a visit's query string resolves to."""

from __future__ import annotations

import pytest

import crmkit
from crmkit import record_links
from crmkit.errors import NotFound, PermissionDenied, ValidationError
from crmkit.settings import SETTINGS
from crmkit.voila_launch import dashboard_url

pytestmark = pytest.mark.core

BASE = "https://hub.example.org/hub/user-redirect/voila/render/dashboards/addresses.ipynb"


def test_the_default_base_is_the_demo_s_addresses_dashboard() -> None:
    from crmkit.demo import DemoSettings

    spec = SETTINGS[record_links.SETTING]
    assert spec.default == dashboard_url(DemoSettings().voila_port, "addresses.ipynb")
    assert spec.right == "teams.admin"


def test_the_url_carries_the_record_id_only() -> None:
    assert record_links.record_url(BASE, 17) == BASE + "?record=17"
    assert record_links.record_url(" http://127.0.0.1:8866/voila/render/addresses.ipynb ", 3) == (
        "http://127.0.0.1:8866/voila/render/addresses.ipynb?record=3")
    for bad_id in (0, -1, True, "17", 1.5):
        with pytest.raises(ValidationError):
            record_links.record_url(BASE, bad_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("base", [
    "javascript:alert(1)", "ftp://host/x", "https://", "host/voila/render/addresses.ipynb",
    BASE + "?user=tom", BASE + "#x", "https://hub.example.org/a b", "https://hub.example.org:port/x", 17, None,
])
def test_a_base_that_is_no_plain_web_address_is_refused(base: object) -> None:
    with pytest.raises(ValidationError) as caught:
        record_links.check_base(base)
    assert "https://" in caught.value.text("de") and "https://" in caught.value.text("en")


def test_link_for_follows_the_setting_and_an_empty_setting_means_no_link(crm: crmkit.CRM) -> None:
    address = crm.add_address(company="Müller & Söhne GmbH", city="Berlin")
    assert record_links.link_for(crm, address) == f"http://127.0.0.1:8866/voila/render/addresses.ipynb?record={address}"
    crm.set_setting(record_links.SETTING, BASE)
    assert record_links.link_for(crm, address) == f"{BASE}?record={address}"
    crm.set_setting(record_links.SETTING, "")
    assert record_links.link_for(crm, address) is None


def test_an_active_user_opens_the_record(crm: crmkit.CRM) -> None:
    address = crm.add_address(company="Müller & Söhne GmbH", city="Berlin")
    crm.add_user("vera", "Vera", roles=["viewer"])  # »Nur lesen« reads records
    vera = crmkit.CRM(crm.store, "vera")
    link = record_links.resolve(vera, f"record={address}&user=vera")
    assert link is not None and link.address_id == address
    assert link.record["company"] == "Müller & Söhne GmbH"
    assert record_links.resolve(vera, "user=vera") is None  # no record asked for: the plain dashboard


def test_no_session_or_a_switched_off_user_is_refused_before_the_id_is_looked_up(crm: crmkit.CRM) -> None:
    address = crm.add_address(company="Müller & Söhne GmbH", city="Berlin")
    for query in (f"record={address}", "record=999999"):  # refused alike: the refusal tells nothing of the id
        with pytest.raises(PermissionDenied) as caught:
            record_links.resolve(None, query)
        assert caught.value.key == "error.msg.record_link_refused"
    crm.add_user("tom", "Tom", roles=["teams_admin"])
    tom = crmkit.CRM(crm.store, "tom")
    crm.store.write(lambda tx: tx.execute("UPDATE users SET active = false WHERE name = ?", ["tom"]))
    with pytest.raises(PermissionDenied) as caught:
        record_links.resolve(tom, f"record={address}")
    assert "Müller" not in caught.value.text("de") + caught.value.text("en")


def test_an_unknown_id_is_not_found(crm: crmkit.CRM) -> None:
    with pytest.raises(NotFound) as caught:
        record_links.resolve(crm, "record=999999")
    assert caught.value.key == "error.msg.record_link_unknown"
    assert "999999" in caught.value.text("de") and "999999" in caught.value.text("en")


@pytest.mark.parametrize("query", ["record=", "record=abc", "record=0", "record=-3", "record=1.5", "record=%2017",
                                   "record=1&record=2", "record=" + "9" * 19, "?record=17x"])
def test_a_malformed_id_is_a_validation_error(crm: crmkit.CRM, query: str) -> None:
    with pytest.raises(ValidationError) as caught:
        record_links.resolve(crm, query)
    assert caught.value.key == "error.msg.record_link_malformed"
