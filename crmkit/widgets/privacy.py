"""Personal data views: the transfer policy form with block flags, and the transfer-log monitor.

Thin views over :mod:`crmkit.privacy` (Personenbezogene Daten: Ausgabe, Export und Weitergabe).
Rights are checked in the core; without ``privacy.admin`` the form is read-only, and without
``privacy.read_log`` the monitor shows only the refusal.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from .. import privacy
from ..addresses import ADDRESS_FIELDS
from ..errors import CrmkitError, ValidationError
from ..i18n import field_label, format_count, format_date, format_datetime, t
from ..i18n.dates import parse_date
from .common import ErrorBox
from .rights_hint import disable_without

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["CHANNEL_COLORS", "PrivacySettings", "TransferLogMonitor", "svg_bar_chart"]

CHANNEL_COLORS = {"teams_manual": "#5b5fc7", "teams_campaign": "#c239b3", "file_export": "#8a8886"}
TABLE_ROWS = 200  # the monitor lists the newest rows; exports carry all of them
DOWNLOAD_LINK_LIMIT = 5 * 1024 * 1024  # inline a download link for exports up to this size


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def _text(value: object) -> str:
    """A cell's text; a missing value (None, NaN) is empty, never "nan"."""
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def channel_label(channel: str, lang: str) -> str:
    return t(f"privacy.channel.{channel}", lang)


def _field(key: str, lang: str) -> str:
    """A logged field as users read it: the address field's label, or the Teams display field's."""
    from ..teams.display_format import DISPLAY_FIELDS

    spec = DISPLAY_FIELDS.get(key)
    return field_label(key, lang) if spec is None else spec.label(lang)


def _display_names(crm: CRM) -> dict[str, str]:
    """Login → display name: users are shown by name (a login stays where no user has it any more)."""
    try:
        return dict(crm.users()[["name", "display_name"]].itertuples(index=False))
    except CrmkitError:
        return {}


# -- policy form + block flags ---------------------------------------------------------------------------

class PrivacySettings(widgets.VBox):
    """Which fields are personal, the action per channel, the retention period, and block flags.

    Attributes (for tests): ``field_boxes`` (field → Checkbox), ``channel_actions`` (channel →
    Dropdown), ``retention``, ``apply_button``, ``flag_address``, ``flag_choice``, ``set_flag_button``,
    ``clear_flag_button``, ``flags_table``, ``message``, ``error``.
    """

    def __init__(self, crm: CRM, lang: str | None = None) -> None:
        self.crm = crm
        self.lang = lang or crm.language
        self.editable = crm.user.can("privacy.admin")
        lang_ = self.lang
        title = widgets.HTML(f"<h3>{_h(t('privacy.personal_data', lang_))}: "
                             f"{_h(t('privacy.output_export_transfer', lang_))}</h3>")
        note = widgets.HTML("" if self.editable else f"<i>{_h(t('privacy.read_only', lang_))}</i>")

        personal = set(privacy.personal_fields(crm))
        self.field_boxes = {
            f: widgets.Checkbox(value=f in personal, description=t(f"address.{f}", lang_), indent=False,
                                disabled=not self.editable, layout=widgets.Layout(width="170px"))
            for f in ADDRESS_FIELDS if f not in ("parent_id", "kind")
        }
        for name, box in self.field_boxes.items():
            box.add_class("crmkit-privacy-field")
            box.add_class(f"crmkit-privacy-field-{name}")
        fields = widgets.VBox([
            widgets.HTML(f"<b>{_h(t('privacy.personal_fields', lang_))}</b>"),
            widgets.GridBox(list(self.field_boxes.values()),
                            layout=widgets.Layout(grid_template_columns="repeat(4, 180px)")),
        ])

        current = privacy.policies(crm)
        self.channel_actions = {
            c: widgets.Dropdown(
                options=[(t(f"privacy.action.{a}", lang_), a) for a in privacy.ACTIONS], value=current[c],
                description=channel_label(c, lang_), disabled=not self.editable,
                style={"description_width": "200px"}, layout=widgets.Layout(width="480px"),
            ) for c in privacy.CHANNELS
        }
        for channel, dropdown in self.channel_actions.items():
            dropdown.add_class(f"crmkit-privacy-channel-{channel}")
        self.retention = widgets.BoundedIntText(
            value=privacy.retention_days(crm), min=1, max=36_500, description=t("privacy.retention", lang_),
            disabled=not self.editable, style={"description_width": "200px"}, layout=widgets.Layout(width="320px"),
        )
        self.retention.add_class("crmkit-privacy-retention")
        self.apply_button = widgets.Button(description=t("common.apply", lang_), button_style="primary",
                                           disabled=not self.editable)
        self.apply_button.add_class("crmkit-privacy-apply")
        self.apply_button.on_click(lambda _b: self.apply())
        self.message = widgets.HTML()
        self.message.add_class("crmkit-privacy-message")
        self.error = ErrorBox()

        self.flag_address = widgets.IntText(value=0, description=t("privacy.address", lang_),
                                            disabled=not self.editable, layout=widgets.Layout(width="200px"))
        self.flag_address.add_class("crmkit-privacy-flag-address")
        self.flag_choice = widgets.Dropdown(
            options=[(de if lang_ == "de" else en, flag) for flag, (_c, de, en) in privacy.FLAGS.items()],
            value="no_transfer", disabled=not self.editable, layout=widgets.Layout(width="240px"),
        )
        self.flag_choice.add_class("crmkit-privacy-flag-choice")
        self.set_flag_button = widgets.Button(description=t("privacy.set_flag", lang_), disabled=not self.editable)
        self.set_flag_button.add_class("crmkit-privacy-set-flag")
        self.set_flag_button.on_click(lambda _b: self._flag(True))
        self.clear_flag_button = widgets.Button(description=t("privacy.clear_flag", lang_),
                                                disabled=not self.editable)
        self.clear_flag_button.add_class("crmkit-privacy-clear-flag")
        self.clear_flag_button.on_click(lambda _b: self._flag(False))
        # Disabled above for non-admins; the tooltip names the missing right (the core checks again).
        disable_without([self.apply_button, self.set_flag_button, self.clear_flag_button, self.retention,
                         self.flag_address, self.flag_choice, *self.field_boxes.values(),
                         *self.channel_actions.values()], crm.user, ("privacy.admin",), lang_)
        self.flags_table = widgets.HTML()
        self.flags_table.add_class("crmkit-privacy-flags")
        flags = widgets.VBox([
            widgets.HTML(f"<h4>{_h(t('privacy.flags', lang_))}</h4>"),
            widgets.HBox([self.flag_address, self.flag_choice, self.set_flag_button, self.clear_flag_button]),
            self.flags_table,
        ])
        super().__init__([
            title, note, fields, *self.channel_actions.values(), self.retention, self.apply_button, self.message,
            self.error, flags,
        ])
        self.add_class("crmkit-privacy-settings")
        self._render_flags()

    def apply(self) -> bool:
        """Store the form (each change audited by the core); True on success."""
        try:
            chosen = [f for f, box in self.field_boxes.items() if box.value]
            if tuple(chosen) != privacy.personal_fields(self.crm):
                privacy.set_personal_fields(self.crm, chosen)
            current = privacy.policies(self.crm)
            for channel, dropdown in self.channel_actions.items():
                if dropdown.value != current[channel]:
                    privacy.set_policy(self.crm, channel, dropdown.value)
            if self.retention.value != privacy.retention_days(self.crm):
                privacy.set_retention_days(self.crm, int(self.retention.value))
        except CrmkitError as exc:
            self.error.show(exc, self.lang)
            return False
        self.error.show(None, self.lang)
        self.message.value = f'<span style="color:#107c10">{_h(t("privacy.saved", self.lang))}</span>'
        return True

    def _flag(self, on: bool) -> None:
        try:
            if on:
                privacy.set_flag(self.crm, self.flag_address.value, self.flag_choice.value)
            else:
                privacy.clear_flag(self.crm, self.flag_address.value, self.flag_choice.value)
        except CrmkitError as exc:
            self.error.show(exc, self.lang)
            return
        self.error.show(None, self.lang)
        self._render_flags()

    def _render_flags(self) -> None:
        frame = privacy.address_flags(self.crm)
        if frame.empty:
            self.flags_table.value = f"<i>{_h(t('privacy.no_flags', self.lang))}</i>"
            return
        labels = {flag: (de if self.lang == "de" else en) for flag, (_c, de, en) in privacy.FLAGS.items()}
        users = _display_names(self.crm)
        head = "".join(f"<th>{_h(t(k, self.lang))}</th>" for k in
                       ("privacy.address", "privacy.flag", "privacy.set_by", "privacy.set_at"))
        body = "".join(
            f"<tr><td>{int(r.address_id)}</td><td>{_h(labels.get(r.flag, r.flag))}</td>"
            f"<td>{_h(users.get(r.set_by, r.set_by))}</td>"
            f"<td>{_h(format_datetime(r.set_at, self.lang))}</td></tr>"
            for r in frame.itertuples()
        )
        self.flags_table.value = f'<table class="crmkit-privacy-flags-table"><tr>{head}</tr>{body}</table>'


# -- the transfer-log monitor ----------------------------------------------------------------------------------

def svg_bar_chart(counts: pd.DataFrame, lang: str, *, width: int = 640, height: int = 200) -> str:
    """A stacked bar chart of transfers per time bucket and channel, as inline SVG.

    ``counts`` has columns bucket, channel, n (as :func:`crmkit.privacy.transfer_counts` returns).
    Every text is escaped; nothing but numbers and escaped labels reaches the markup.
    """
    if counts.empty:
        return f'<svg class="crmkit-tl-chart-svg" width="{width}" height="40" role="img"><text x="4" y="24">' \
               f"{_h(t('transfer_log.empty', lang))}</text></svg>"
    table = counts.pivot_table(index="bucket", columns="channel", values="n", aggfunc="sum", fill_value=0)
    channels = [c for c in privacy.CHANNELS if c in table.columns]
    buckets = list(table.index)
    top = int(table[channels].sum(axis=1).max()) or 1
    left, bottom, legend = 40, 24, 22
    plot_w, plot_h = width - left - 8, height - bottom - legend - 8
    step = plot_w / len(buckets)
    bar_w = max(1.0, step * 0.8)
    parts = [f'<svg class="crmkit-tl-chart-svg" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" role="img" aria-label="{_h(t("transfer_log.chart", lang))}">']
    base = legend + 8 + plot_h
    parts.append(f'<line x1="{left}" y1="{base}" x2="{width - 8}" y2="{base}" stroke="#999"/>')
    parts.append(f'<text x="{left - 4}" y="{legend + 16}" font-size="10" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{left - 4}" y="{base}" font-size="10" text-anchor="end">0</text>')
    for i, bucket in enumerate(buckets):
        x = left + i * step + (step - bar_w) / 2
        y = float(base)
        day = format_date(pd.Timestamp(bucket), lang)
        for channel in channels:
            n = int(table.loc[bucket, channel])
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            tip = f"{day} · {channel_label(channel, lang)}: {n}"
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                         f'fill="{CHANNEL_COLORS[channel]}"><title>{_h(tip)}</title></rect>')
    first, last = (format_date(pd.Timestamp(b), lang) for b in (buckets[0], buckets[-1]))
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="10">{_h(first)}</text>')
    parts.append(f'<text x="{width - 8}" y="{height - 6}" font-size="10" text-anchor="end">{_h(last)}</text>')
    x = left
    for channel in channels:
        label = channel_label(channel, lang)
        parts.append(f'<rect x="{x}" y="4" width="10" height="10" fill="{CHANNEL_COLORS[channel]}"/>')
        parts.append(f'<text x="{x + 14}" y="13" font-size="11">{_h(label)}</text>')
        x += 24 + 7 * len(label)
    parts.append("</svg>")
    return "".join(parts)


class TransferLogMonitor(widgets.VBox):
    """Filter the transfer log, see it per day and channel, and export it (needs ``privacy.read_log``).

    Attributes (for tests): ``address``, ``recipient``, ``channel``, ``since``, ``until`` (filters),
    ``refresh_button``, ``count``, ``chart``, ``table``, ``export_csv``, ``export_xlsx``, ``export_result``,
    ``error``, and ``frame`` (the rows shown).
    """

    def __init__(self, crm: CRM, lang: str | None = None, *, export_dir: str | Path | None = None) -> None:
        self.crm = crm
        self.lang = lang or crm.language
        self.export_dir = Path(export_dir) if export_dir is not None else Path.cwd() / "exports"
        self.frame = pd.DataFrame(columns=list(privacy.LOG_COLUMNS))
        lang_ = self.lang
        title = widgets.HTML(f"<h3>{_h(t('transfer_log.title', lang_))}</h3>")
        self.address = widgets.Text(description=t("privacy.address", lang_), continuous_update=False,
                                    layout=widgets.Layout(width="180px"))
        self.recipient = widgets.Text(description=t("transfer_log.recipient", lang_), continuous_update=False,
                                      layout=widgets.Layout(width="260px"))
        self.channel = widgets.Dropdown(
            options=[(t("table.all", lang_), ""), *[(channel_label(c, lang_), c) for c in privacy.CHANNELS]],
            value="", description=t("transfer_log.channel", lang_), layout=widgets.Layout(width="280px"),
        )
        # Text, not DatePicker: a native date field writes dates as the browser's locale does (mm/dd/yyyy in
        # an American browser), whatever language the user reads; these take the language's format.
        date_layout = widgets.Layout(width="240px")
        self.since = widgets.Text(description=t("transfer_log.since", lang_), layout=date_layout,
                                  placeholder=t("common.date_placeholder", lang_), continuous_update=False)
        self.until = widgets.Text(description=t("transfer_log.until", lang_), layout=date_layout,
                                  placeholder=t("common.date_placeholder", lang_), continuous_update=False)
        self.refresh_button = widgets.Button(description=t("table.refresh", lang_), icon="refresh")
        for w, cls in ((self.address, "address"), (self.recipient, "recipient"), (self.channel, "channel"),
                       (self.since, "since"), (self.until, "until"), (self.refresh_button, "refresh")):
            w.add_class(f"crmkit-tl-{cls}")
            if not isinstance(w, widgets.Button):
                w.observe(lambda _c: self.refresh(), "value")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.count = widgets.HTML()
        self.count.add_class("crmkit-tl-count")
        self.chart = widgets.HTML()
        self.chart.add_class("crmkit-tl-chart")
        self.table = widgets.HTML()
        self.table.add_class("crmkit-tl-table")
        self.export_csv = widgets.Button(description=t("transfer_log.export_csv", lang_), icon="download")
        self.export_csv.add_class("crmkit-tl-export-csv")
        self.export_csv.on_click(lambda _b: self.export("csv"))
        self.export_xlsx = widgets.Button(description=t("transfer_log.export_xlsx", lang_), icon="download")
        self.export_xlsx.add_class("crmkit-tl-export-xlsx")
        self.export_xlsx.on_click(lambda _b: self.export("xlsx"))
        self.export_result = widgets.HTML()
        self.export_result.add_class("crmkit-tl-export-result")
        self.error = ErrorBox()
        super().__init__([
            title, widgets.HBox([self.address, self.recipient, self.channel]),
            widgets.HBox([self.since, self.until, self.refresh_button]), self.error, self.count, self.chart,
            widgets.HBox([self.export_csv, self.export_xlsx]), self.export_result, self.table,
        ])
        self.add_class("crmkit-transfer-log")
        disable_without((self.address, self.recipient, self.channel, self.since, self.until, self.refresh_button,
                         self.export_csv, self.export_xlsx), crm.user, ("privacy.read_log",), self.lang)
        self.refresh()

    def filters(self) -> dict[str, Any]:
        """The current filters as keyword arguments of :func:`crmkit.privacy.transfer_log`.

        Raises:
            ValidationError: the address box holds something other than a number, or a date box no date.
        """
        out: dict[str, Any] = {}
        text = self.address.value.strip()
        if text:
            if not text.isdigit():
                raise ValidationError(t("transfer_log.bad_address", self.lang))
            out["address_id"] = int(text)
        if self.recipient.value.strip():
            out["recipient"] = self.recipient.value.strip()
        if self.channel.value:
            out["channel"] = self.channel.value
        for name, box in (("since", self.since), ("until", self.until)):
            day = parse_date(box.value, self.lang)
            if day is not None:
                out[name] = day
        return out

    def refresh(self) -> None:
        """Re-read the rows, the counts and the chart for the current filters."""
        try:
            filters = self.filters()
            self.frame = privacy.transfer_log(self.crm, limit=TABLE_ROWS, **filters)
            total = privacy.transfer_counts(self.crm, **filters)
            counts = _coarsen(self.crm, total, filters)
        except CrmkitError as exc:
            self.error.show(exc, self.lang)
            self.table.value = self.chart.value = self.count.value = ""
            return
        self.error.show(None, self.lang)
        n = int(total["n"].sum()) if not total.empty else 0
        self.count.value = _h(t("transfer_log.rows", self.lang, n=format_count(n, self.lang)))
        # Nothing logged: the table says so; a chart saying it too showed the line twice.
        self.chart.value = "" if counts.empty else svg_bar_chart(counts, self.lang)
        self.chart.layout.display = "none" if counts.empty else None
        self.table.value = self._table_html()

    def _table_html(self) -> str:
        if self.frame.empty:
            return f"<i>{_h(t('transfer_log.empty', self.lang))}</i>"
        cols = ("logged_at", "user_name", "ms_account", "channel", "trigger", "address_id", "recipient_name",
                "fields", "purpose", "outcome")
        head = "".join(f"<th>{_h(t(f'transfer_log.col.{c}', self.lang))}</th>" for c in cols)
        users = _display_names(self.crm)
        rows = []
        for r in self.frame.itertuples():
            cells = {
                "logged_at": format_datetime(r.logged_at, self.lang, seconds=True),
                "user_name": users.get(_text(r.user_name), _text(r.user_name)),
                "ms_account": _text(r.ms_account),
                "channel": channel_label(r.channel, self.lang), "trigger": t(f"transfer_log.trigger.{r.trigger}",
                                                                             self.lang),
                "address_id": r.address_id, "recipient_name": _text(r.recipient_name) or _text(r.recipient_id),
                "fields": ", ".join(_field(f, self.lang) for f in r.fields), "purpose": _text(r.purpose),
                # a reply filed from Teams (direction in) came in: »eingegangen«, not »gesendet«
                "outcome": t("transfer_log.outcome.received" if getattr(r, "direction", "out") == "in"
                             else f"transfer_log.outcome.{r.outcome}", self.lang),
            }
            rows.append("<tr>" + "".join(f"<td>{_h(cells[c])}</td>" for c in cols) + "</tr>")
        return f'<table class="crmkit-tl-rows"><tr>{head}</tr>{"".join(rows)}</table>'

    def export(self, fmt: str) -> Path | None:
        """Export the filtered log (all rows, not only those shown); returns the file written."""
        try:
            filters = self.filters()
            self.export_dir.mkdir(parents=True, exist_ok=True)
            path = self.export_dir / f"transfer_log-{datetime.now():%Y%m%d-%H%M%S}.{fmt}"
            n = privacy.export_transfer_log(self.crm, path, fmt, **filters)
        except (CrmkitError, OSError) as exc:
            self.error.show(exc, self.lang)
            return None
        self.error.show(None, self.lang)
        link = ""
        if path.stat().st_size <= DOWNLOAD_LINK_LIMIT:
            mime = "text/csv" if fmt == "csv" else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            data = base64.b64encode(path.read_bytes()).decode()
            link = f' <a download="{_h(path.name)}" href="data:{mime};base64,{data}">{_h(path.name)}</a>'
        text = t("transfer_log.exported", self.lang, n=format_count(n, self.lang), path=str(path))
        self.export_result.value = f"<span>{_h(text)}</span>{link}"
        return path


def _coarsen(crm: CRM, daily: pd.DataFrame, filters: dict[str, Any]) -> pd.DataFrame:
    """Days for up to two months, then weeks for up to two years, then months: the chart stays readable."""
    days = daily["bucket"].nunique() if not daily.empty else 0
    if days <= 62:
        return daily
    span = (pd.Timestamp(daily["bucket"].max()) - pd.Timestamp(daily["bucket"].min())).days
    bucket = "week" if span <= 730 else "month"
    return privacy.transfer_counts(crm, bucket=bucket, **filters)
