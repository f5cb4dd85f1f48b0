"""The dashboard's route table (as aiohttp's polls demo keeps it): every path under ``/dashboard`` and its view.

The application is assembled in ``app.py``, the gate is ``middlewares.py``, the views are ``views/``.
"""

from __future__ import annotations

from aiohttp import web

from relay.dashboard.render import STATIC
from relay.dashboard.views import auth, bulk, control, detail, listing, overview


def setup_routes(dash: web.Application) -> None:
    dash.add_routes(
        [
            web.get("/", overview.overview),
            web.get("/login", auth.login_form),
            web.post("/login", auth.login),
            web.post("/logout", auth.logout),
            web.get("/notifications", listing.notifications),
            web.get("/notifications/{id}", detail.detail),
            web.post("/notifications/{id}/resend", detail.resend_one),
            web.get("/resend", bulk.bulk_confirm),
            web.post("/resend", bulk.bulk_resend),
            web.get("/endpoints/{name}/{action:pause|resume|retry}", control.control_confirm),
            web.post("/endpoints/{name}/{action:pause|resume|retry}", control.control_endpoint),
            web.get("/notifications/{id}/{action:retry|cancel}", control.control_confirm),
            web.post("/notifications/{id}/{action:retry|cancel}", control.control_notification),
            web.get("/data/overview", overview.overview_data),
            web.get("/data/notifications", listing.notifications_data),
            web.get("/data/notifications/{id}", detail.detail_data),
            web.static("/static", STATIC),
        ]
    )
