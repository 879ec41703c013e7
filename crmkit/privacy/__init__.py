"""Personal data: which fields are personal, the transfer policy per channel, block flags, the transfer log.

Personenbezogene Daten »Ausgabe, Export und Weitergabe«. Every transfer of address data to
someone (a Teams message by hand or by a campaign action, a file export) goes through two steps:

1. **Before**: :func:`check_transfer` applies the channel's policy (``allow`` silently / ``log`` /
   ``log_purpose``: log and require a purpose / ``block``) and the addresses' block flags, and
   returns a :class:`TransferDecision` per address.
2. **After**: the sender writes one :class:`TransferRecord` per address × recipient with
   :func:`log_transfers` - inside its own transaction (``tx``), together with its delivery state,
   so the log matches what was delivered. ``message_key`` + address + recipient is unique, so a
   resumed send cannot log a delivery twice.

The transfer log is append-only: this module offers no way to change or delete a row except
:func:`purge_transfer_log`, which drops rows older than ``privacy.retention_days`` and is audited.
Reading it needs ``privacy.read_log``; changing the policy, flags or retention needs ``privacy.admin``.

Table ``transfer_log`` (one row per address × recipient)::

    id             BIGINT     from transfer_log_seq
    logged_at      TIMESTAMP  when (local time, like the rest of the store)
    user_name      VARCHAR    CRM user who sent
    ms_account     VARCHAR    Microsoft account that sent (UPN), if any
    channel        VARCHAR    teams_manual | teams_campaign | file_export
    trigger        VARCHAR    manual | campaign
    address_id     BIGINT
    fields         VARCHAR[]  the display-format field names that were shown
    recipient_id   VARCHAR    directory object id (or a file path for exports)
    recipient_name VARCHAR
    purpose        VARCHAR
    outcome        VARCHAR    sent | failed | blocked
    message_id     VARCHAR    Graph chatMessage id
    message_key    VARCHAR    the outbox's message key; (message_key, address_id, recipient_id) is unique
    detail         VARCHAR    why it failed or was blocked
    dedupe_key     BIGINT     internal: 64-bit hash of that triple, indexed, for the uniqueness check

An index on ``address_id`` finds one address's rows; :func:`compact_transfer_log` rewrites the
table in address order so those rows also sit together (see its docstring for the numbers).

The package is split by reason to change; this module re-exports their public names:

- :mod:`crmkit.privacy.transfer_policy`: personal fields, the action per channel, block flags, :func:`check_transfer`;
- :mod:`crmkit.privacy.log`: :class:`TransferRecord` and :func:`log_transfers` (the writes);
- :mod:`crmkit.privacy.reports`: :func:`transfer_log`, the access and recipient reports, counts, export;
- :mod:`crmkit.privacy.retention`: the retention period, :func:`purge_transfer_log`, :func:`compact_transfer_log`.
"""

from __future__ import annotations

# BULK_ROWS and MAX_PURPOSE are re-exported for the tests, not part of __all__.
from .log import BULK_ROWS as BULK_ROWS
from .log import (
    LOG_COLUMNS,
    OUTCOMES,
    TRIGGERS,
    DuplicateTransfer,
    TransferRecord,
    log_transfers,
    new_record,
)
from .reports import (
    access_report,
    export_transfer_log,
    recipient_report,
    transfer_counts,
    transfer_log,
)
from .retention import (
    compact_transfer_log,
    purge_transfer_log,
    retention_days,
    set_retention_days,
)
from .transfer_policy import (
    ACTIONS,
    CHANNELS,
    DEFAULT_PERSONAL_FIELDS,
    DEFAULT_POLICY,
    FLAGS,
    AddressDecision,
    TransferDecision,
    address_flags,
    check_transfer,
    clear_flag,
    personal_fields,
    policies,
    policy,
    set_flag,
    set_personal_fields,
    set_policy,
)
from .transfer_policy import MAX_PURPOSE as MAX_PURPOSE

__all__ = [
    "ACTIONS",
    "CHANNELS",
    "DEFAULT_PERSONAL_FIELDS",
    "DEFAULT_POLICY",
    "FLAGS",
    "LOG_COLUMNS",
    "OUTCOMES",
    "TRIGGERS",
    "AddressDecision",
    "DuplicateTransfer",
    "TransferDecision",
    "TransferRecord",
    "access_report",
    "address_flags",
    "check_transfer",
    "clear_flag",
    "compact_transfer_log",
    "export_transfer_log",
    "log_transfers",
    "new_record",
    "personal_fields",
    "policies",
    "policy",
    "purge_transfer_log",
    "recipient_report",
    "retention_days",
    "set_flag",
    "set_personal_fields",
    "set_policy",
    "set_retention_days",
    "transfer_counts",
    "transfer_log",
]
