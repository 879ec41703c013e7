"""The Microsoft Teams integration: activation, display format, and the send path (options, planning,
staging, outbox, delivery, gateway, results; :mod:`crmkit.teams.send` is the service, ``crm.teams``).

Submodules are imported explicitly (``from crmkit.teams import activation``) so that importing the
package stays cheap and free of cycles with :mod:`crmkit.crm`.
"""
