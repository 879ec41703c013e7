"""The Microsoft Teams integration: activation, display format, and (from the send path) sending.

Submodules are imported explicitly (``from crmkit.teams import activation``) so that importing the
package stays cheap and free of cycles with :mod:`crmkit.crm`.
"""
