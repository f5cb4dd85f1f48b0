"""The overview page and its refresh: health, each endpoint's state and chart (``relay/store/overview.py``)."""

from __future__ import annotations

from aiohttp import web

from relay.dashboard import view
from relay.dashboard.render import REFRESH_MS, fragment, render_page, render_section
from relay.dashboard.sessions import session_of
from relay.store.connection import clock_ms
from relay.store.overview import overview_model
from relay.web import appkeys


async def overview(request: web.Request) -> web.StreamResponse:
    redis = request.config_dict[appkeys.REDIS]
    model = await overview_model(redis, request.config_dict[appkeys.LIVE].settings, await clock_ms(redis))
    return render_page(
        request,
        "overview.html",
        {**model, "summary": view.overview_summary(model)},
        session=session_of(request),
        current="overview",
        refresh_ms=REFRESH_MS,
    )


async def overview_data(request: web.Request) -> web.StreamResponse:
    redis = request.config_dict[appkeys.REDIS]
    model = await overview_model(redis, request.config_dict[appkeys.LIVE].settings, await clock_ms(redis))
    return fragment(model, render_section(request, "overview_fragment.html", model), view.overview_summary(model))
