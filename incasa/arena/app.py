"""The arena's web app: server-rendered pages (Jinja2, a few lines of plain JS) and a small JSON API, on FastAPI.

Pages
    GET  /                 a new blind battle: two images, A and B, and four buttons (A / B / tie / both bad)
    POST /battles          a new battle on a prompt the voter typed (form field `prompt`)
    GET  /battles/{id}     the battle again, or after the vote the reveal: which variant was A and which was B
    POST /vote             form fields battle_id, choice -> redirect to the reveal
    GET  /leaderboard      rank, rating, bootstrap and sandwich 95% intervals, online Elo, votes, battle share
    GET  /variants/{id}    one variant's battles and its online-Elo trajectory
    GET  /export.jsonl, /export.parquet   every battle, for analysis elsewhere
    GET  /outputs/{sha256}.png            stored outputs, by content hash (the hash says nothing about the model)
JSON API (same rules; bad input is a 4xx with a message)
    POST /api/battles {"prompt": optional}            -> {battle_id, prompt, image_a, image_b, min_view_s}
    POST /api/battles/{id}/vote {"choice": "a"|...}   -> {counted, reason, model_a, model_b}
    GET  /api/leaderboard                             -> {num_votes, rows: [...]}

Typed prompts are checked by incasa.safety's guardrails (`check_prompts`, on by default) and refused with a 400 that
names the policy category when it says "block"; the curated prompts are ours.

Slow models: with `pool_target > 0` a background thread keeps that many battles pre-generated, and new battles on
curated prompts are taken from that pool first (a typed prompt is always generated live).

Voters are anonymous: a random id in a cookie. With `require_token` a voter must present a token issued by
`incasa arena tokens issue` (`?token=...` once, then kept in a cookie, or the X-Arena-Token header); their id is
then the token's voter row. Rate limits apply per voter and per client address, to new battles and to votes.
"""

import contextlib
import logging
import random
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from incasa.arena import board, exchange, guard, store
from incasa.arena.battles import AdapterCache, ArenaError, cast_vote, create_battle, serve_battle
from incasa.arena.ratings import RatingConfig
from incasa.arena.store import Battle, Output, Prompt, Vote, Voter

BATTLE_ID_PATTERN = r"^[0-9a-f]{32}$"
VOTER_COOKIE, TOKEN_COOKIE = "arena_voter", "arena_token"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArenaConfig:
    db_url: str
    min_view_s: float = 2.0  # a vote cast sooner after the battle was shown is stored but not counted
    votes_per_minute_voter: int = 30
    votes_per_minute_ip: int = 120
    battles_per_minute_ip: int = 60  # new battles cost two generations: limit them too
    require_token: bool = False
    anchor: str | None = None  # "model/variant" held at 1000; default: the oldest variant with votes
    ratings: RatingConfig = field(default_factory=RatingConfig)
    seed: int | None = None  # matchmaking/prompt randomness; None = fresh entropy
    pool_target: int = 0  # > 0: a background thread keeps this many pre-generated battles waiting (slow models)
    check_prompts: bool = True  # typed prompts go through incasa.safety's guardrails; "block" refuses them


class PromptIn(BaseModel):
    prompt: str | None = Field(default=None, min_length=1, max_length=500)


class VoteIn(BaseModel):
    choice: Literal["a", "b", "tie", "both_bad"]


def create_app(config: ArenaConfig) -> FastAPI:
    """The FastAPI app over the store at config.db_url (migrated on start)."""
    sessions = store.open_store(config.db_url)
    adapters = AdapterCache()
    rng = random.Random(config.seed)
    salt = guard.new_token()  # per process: address hashes cannot be joined across restarts
    vote_limit_voter = guard.RateLimiter(config.votes_per_minute_voter)
    vote_limit_ip = guard.RateLimiter(config.votes_per_minute_ip)
    battle_limit_ip = guard.RateLimiter(config.battles_per_minute_ip)
    templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
    templates.env.filters["utc"] = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    board_cache: dict = {}
    policy = None
    if config.check_prompts:
        from incasa.safety.policy import check_prompt, load_policy

        policy = load_policy()
    board_lock = threading.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        stop = threading.Event()
        filler = None
        if config.pool_target > 0:
            filler = threading.Thread(target=_keep_pool_filled, args=(sessions, adapters, config.pool_target, stop),
                                      name="arena-pool", daemon=True)
            filler.start()
        yield
        stop.set()
        if filler is not None:
            filler.join(timeout=60)

    app = FastAPI(title="incasa arena", docs_url="/api/docs", redoc_url=None, lifespan=lifespan)
    app.state.sessions = sessions

    # -- identity ------------------------------------------------------------------------------------------------------

    @app.middleware("http")
    async def identify_voter(request: Request, call_next):
        new_cookie = None
        if config.require_token:
            token = (request.query_params.get("token") or request.headers.get("x-arena-token")
                     or request.cookies.get(TOKEN_COOKIE))
            request.state.voter_id = None
            if token:
                with sessions.begin() as s:
                    request.state.voter_id = s.scalar(
                        select(Voter.id).where(Voter.token_hash == guard.token_hash(token)))
                if request.query_params.get("token") and request.state.voter_id:
                    new_cookie = (TOKEN_COOKIE, token)
        else:
            request.state.voter_id = request.cookies.get(VOTER_COOKIE)
            if not request.state.voter_id or len(request.state.voter_id) != 32:
                request.state.voter_id = store.new_id()
                new_cookie = (VOTER_COOKIE, request.state.voter_id)
        response = await call_next(request)
        if new_cookie:
            response.set_cookie(*new_cookie, max_age=365 * 86400, httponly=True, samesite="lax")
        return response

    def voter_of(request: Request) -> str:
        if request.state.voter_id is None:
            raise ArenaError(401, "this arena needs a voter token: open the link you were given (…/?token=...)")
        return request.state.voter_id

    def client_hash(request: Request) -> str:
        return guard.ip_hash(request.client.host if request.client else "unknown", salt)

    # -- errors: one line a person can act on; JSON under /api, a page elsewhere ---------------------------------------

    def error_response(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": message}, status_code=status)
        return templates.TemplateResponse(request, "error.html", {"status": status, "message": message},
                                          status_code=status)

    @app.exception_handler(ArenaError)
    async def arena_error(request: Request, exc: ArenaError):
        return error_response(request, exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e["loc"] if x not in ("body", "query", "path", "form"))
            parts.append(f"{where or 'request'}: {e['msg']}")
        return error_response(request, 422, "bad input - " + "; ".join(parts))

    # -- battles -------------------------------------------------------------------------------------------------------

    def new_battle(request: Request, prompt: str | None) -> str:
        voter_id = voter_of(request)
        if not battle_limit_ip.allow(client_hash(request)):
            raise ArenaError(429, "too many new battles from your address; wait a minute")
        if prompt is not None and policy is not None:
            decision = check_prompt(prompt, policy)
            if decision.action == "block":
                raise ArenaError(400, f"this prompt is refused by the content policy ({decision.category}): "
                                      f"{decision.reason}")
        return serve_battle(sessions, adapters, rng, voter_id, prompt)

    def battle_view(battle_id: str, voter_id: str | None) -> dict:
        with sessions.begin() as s:
            battle = s.get(Battle, battle_id)
            if battle is None:
                raise ArenaError(404, f"no battle {battle_id!r}")
            vote = s.scalar(select(Vote).where(Vote.battle_id == battle_id))
            if vote is None and battle.voter_id != voter_id:
                raise ArenaError(403, "this battle was shown to another voter")
            names = store.variant_names(s)
            prompt = s.get(Prompt, battle.prompt_id).text
            view = {"battle": battle, "prompt": prompt, "vote": vote, "min_view_s": config.min_view_s,
                    "image_a": f"/outputs/{battle.output_a}.png", "image_b": f"/outputs/{battle.output_b}.png"}
            if vote is not None:  # identities only after the vote
                view |= {"model_a": names[battle.variant_a_id], "model_b": names[battle.variant_b_id],
                         "variant_a_id": battle.variant_a_id, "variant_b_id": battle.variant_b_id}
            return view

    def vote(request: Request, battle_id: str, choice: str):
        voter_id = voter_of(request)
        ip = client_hash(request)
        if not vote_limit_voter.allow(voter_id):
            raise ArenaError(429, f"more than {config.votes_per_minute_voter} votes a minute from you; slow down")
        if not vote_limit_ip.allow(ip):
            raise ArenaError(429, "too many votes from your address; wait a minute")
        return cast_vote(sessions, battle_id, voter_id, ip, choice, config.min_view_s)

    @app.get("/", response_class=HTMLResponse)
    def battle_page(request: Request):
        battle_id = new_battle(request, None)
        return templates.TemplateResponse(request, "battle.html", battle_view(battle_id, request.state.voter_id))

    @app.post("/battles")
    def battle_with_prompt(request: Request, prompt: str = Form(..., min_length=1, max_length=500)):
        if not prompt.strip():
            raise ArenaError(422, "bad input - prompt: type a few words")
        battle_id = new_battle(request, prompt.strip())
        return RedirectResponse(f"/battles/{battle_id}", status_code=303)

    @app.get("/battles/{battle_id}", response_class=HTMLResponse)
    def battle_or_reveal(request: Request, battle_id: str):
        view = battle_view(battle_id, request.state.voter_id)
        return templates.TemplateResponse(request, "reveal.html" if view["vote"] else "battle.html", view)

    @app.post("/vote")
    def vote_form(request: Request, battle_id: str = Form(..., pattern=BATTLE_ID_PATTERN),
                  choice: Literal["a", "b", "tie", "both_bad"] = Form(...)):
        vote(request, battle_id, choice)
        return RedirectResponse(f"/battles/{battle_id}", status_code=303)

    @app.get("/outputs/{sha}.png")
    def output(sha: str):
        with sessions.begin() as s:
            row = s.get(Output, sha)
            if row is None:
                raise ArenaError(404, "no such output")
            return Response(row.data, media_type=row.media_type,
                            headers={"Cache-Control": "max-age=31536000, immutable"})

    # -- leaderboard, history, export ----------------------------------------------------------------------------------

    def current_board() -> board.Board:
        with sessions.begin() as s:
            key = (s.scalar(select(func.count()).select_from(Vote)),
                   s.scalar(select(func.count()).select_from(Voter).where(Voter.flagged.is_(True))),
                   s.scalar(select(func.count()).select_from(store.Variant)),
                   s.scalar(select(func.count()).select_from(store.Variant).where(store.Variant.active.is_(True))))
        with board_lock:  # one refit at a time; concurrent viewers share it
            if board_cache.get("key") != key:
                board_cache["board"] = board.compute_board(sessions, config.ratings, config.anchor)
                board_cache["key"] = key
            return board_cache["board"]

    @app.get("/leaderboard", response_class=HTMLResponse)
    def leaderboard_page(request: Request):
        return templates.TemplateResponse(request, "leaderboard.html", {"board": current_board(),
                                                                        "rounds": config.ratings.bootstrap_rounds})

    @app.get("/variants/{variant_id}", response_class=HTMLResponse)
    def variant_page(request: Request, variant_id: int):
        try:
            history = board.variant_history(sessions, variant_id)
        except ValueError as e:
            raise ArenaError(404, str(e)) from None
        return templates.TemplateResponse(request, "variant.html",
                                          {"h": history, "spark": _sparkline(history["elo_trajectory"])})

    @app.get("/export.{fmt}")
    def export(fmt: Literal["jsonl", "parquet"]):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"arena-battles.{fmt}"
            exchange.export_battles(sessions, path)
            data = path.read_bytes()
        media = "application/x-ndjson" if fmt == "jsonl" else "application/vnd.apache.parquet"
        return Response(data, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="arena-battles.{fmt}"'})

    # -- JSON API ------------------------------------------------------------------------------------------------------

    @app.post("/api/battles")
    def api_new_battle(request: Request, body: PromptIn):
        prompt = body.prompt.strip() if body.prompt is not None else None
        if prompt == "":
            raise ArenaError(422, "bad input - prompt: must not be blank")
        view = battle_view(new_battle(request, prompt), request.state.voter_id)
        return {"battle_id": view["battle"].id, "prompt": view["prompt"], "image_a": view["image_a"],
                "image_b": view["image_b"], "min_view_s": config.min_view_s}

    @app.post("/api/battles/{battle_id}/vote")
    def api_vote(request: Request, battle_id: str, body: VoteIn):
        result = vote(request, battle_id, body.choice)
        return {"battle_id": result.battle_id, "choice": result.choice, "counted": result.counted,
                "reason": result.reason, "model_a": result.model_a, "model_b": result.model_b}

    @app.get("/api/leaderboard")
    def api_leaderboard():
        b = current_board()
        return {"num_votes": b.num_votes, "uniform_share": b.uniform_share, "tie_nu": b.tie_nu,
                "rows": [r.__dict__ for r in b.rows]}

    return app


def _keep_pool_filled(sessions, adapters: AdapterCache, target: int, stop: threading.Event) -> None:
    """Top the pool of unserved battles up to `target`, one generation at a time, until `stop` is set."""
    rng = random.Random()
    while not stop.is_set():
        with sessions.begin() as s:
            waiting = s.scalar(select(func.count()).select_from(Battle).where(
                Battle.pooled.is_(True), Battle.voter_id.is_(None), Battle.status == "ready"))
        if waiting >= target:
            stop.wait(1.0)
            continue
        try:
            create_battle(sessions, adapters, rng, pooled=True)
        except ArenaError as e:  # e.g. fewer than two active variants: retry later, the server keeps serving
            log.warning("pool filler: %s", e.message)
            stop.wait(10.0)


def _sparkline(values: list[float], width: int = 300, height: int = 60) -> str:
    """SVG polyline points for a small inline chart ("" with fewer than two points)."""
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = width / (len(values) - 1)
    return " ".join(f"{i * step:.1f},{height - (v - lo) / span * height:.1f}" for i, v in enumerate(values))
