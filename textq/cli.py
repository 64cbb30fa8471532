"""The `textq` command: run the service (`up`, `api`, `worker`), manage it (`db`, `models`,
`keys`), and use it (`submit`, `bulk`, `status`, `results`, `cancel`, `jobs`)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from shared.config import Settings, get_settings
from shared.logs import configure_logging
from textq import client_commands
from textq.failing import fail, quiet_on_closed_pipe, settings_or_fail
from textq.supervise import serve_beside

app = typer.Typer(
    help="textq: sentiment and summarization with Hugging Face models as durable jobs.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
models_app = typer.Typer(help="Manage the models workers serve.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
tenants_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")

K = TypeVar("K")
V = TypeVar("V")
HostOption = Annotated[str | None, typer.Option(help="Interface to listen on.")]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on.")]


@app.command()
def up(host: HostOption = None, port: PortOption = None) -> None:
    """Run the API and one worker together (embedded default: SQLite and a file broker)."""
    settings = settings_or_fail()
    configure_logging(settings.log_level, settings.log_format)
    host, port = host or settings.api_host, port or settings.api_port
    _check_open_api(settings, host)
    # Before anything starts: a worker started beside an API that cannot listen would load
    # its models only to be stopped.
    _check_port_free(host, port)
    _upgrade(settings, wait_s=0)
    _preflight_models(settings, settings.worker_tasks)
    typer.echo(
        f"textq is up: API on http://{host}:{port} (docs at /docs), one worker, webhooks, "
        f"data in {_where_data_lives(settings)}. Ctrl-C (or SIGTERM) stops them all."
    )
    for command in serve_beside(_api_server(settings, host, port), ["worker", "webhooks"]):
        raise fail(f"stopped because the {command} could not stay up; see above")


def _where_data_lives(settings: Settings) -> str:
    """Return the data dir, or the database URL without its password."""
    if not settings.database_url:
        return str(settings.data_dir)
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _check_open_api(settings: Settings, host: str) -> None:
    """Refuse to serve without API keys on anything but loopback; say so when open."""
    if settings.requires_api_key:
        return
    if host not in LOOPBACK_HOSTS:
        why = "embedded mode" if settings.auth == "auto" else "TEXTQ_AUTH=off"
        raise fail(
            f"the API runs without API keys ({why}), "
            f"so it only listens on 127.0.0.1, not {host}; set TEXTQ_AUTH=required and "
            "create keys with `textq keys create --tenant NAME`"
        )
    typer.echo("textq: no API keys needed (embedded mode, listening on loopback only)", err=True)


def _check_port_free(host: str, port: int) -> None:
    """End the command in one line if `host:port` cannot be listened on (e.g. in use)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            # As uvicorn binds: a port left in TIME_WAIT by a server just stopped is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise fail(
            f"cannot listen on {host}:{port} ({error.strerror or error}); stop what uses it, "
            "or choose another port with --port or TEXTQ_API_PORT"
        ) from None


# A stopping API waits this long for answers in flight, then cuts them: an event stream or a
# followed export lasts as long as its job, and would otherwise hold the stop until it ends
# (their clients resume with Last-Event-ID, or export again).
SHUTDOWN_GRACE_S = 20  # under Kubernetes' default 30 s grace, so the API still ends cleanly


def _api_server(settings: Settings, host: str, port: int):  # type: ignore[no-untyped-def]
    import uvicorn

    from api.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through textq's handler (JSON or text)
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    return uvicorn.Server(config)


@app.command()
def api(
    host: HostOption = None,
    port: PortOption = None,
    workers: Annotated[int, typer.Option(help="API processes.")] = 1,
) -> None:
    """Run the HTTP API (production: point it at Postgres and Redis)."""
    import uvicorn

    settings = settings_or_fail()
    configure_logging(settings.log_level, settings.log_format)
    _check_open_api(settings, host or settings.api_host)
    _check_port_free(host or settings.api_host, port or settings.api_port)
    from shared.metrics import share_between_processes

    share_between_processes(workers)  # one /metrics count over all the processes
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through textq's handler (JSON or text)
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )


@app.command()
def worker(
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:N, mps or auto (TEXTQ_DEVICE).")
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option(help="Comma-separated tasks to serve: sentiment,summarize."),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated catalogue models to serve, e.g. sst2,twitter,bart "
            "(TEXTQ_WORKER_MODELS; default: every model of its tasks)."
        ),
    ] = None,
) -> None:
    """Run a worker that keeps its models warm on one device and drains its task queues.

    Each task's default model loads at start; the worker's other models load on the first
    job for them.
    """
    from worker.memory import limit_kernel_cache

    limit_kernel_cache()
    if device:
        os.environ["TEXTQ_DEVICE"] = device
    if tasks:
        os.environ["TEXTQ_WORKER_TASKS"] = tasks
    if models:
        os.environ["TEXTQ_WORKER_MODELS"] = models
    get_settings.cache_clear()
    settings = settings_or_fail()
    configure_logging(settings.log_level, settings.log_format)
    resolved = _preflight_models(settings, settings.worker_tasks)
    from worker.main import serve
    from worker.model_registry import ModelUnavailable

    try:
        serve(settings, resolved)
    except ModelUnavailable as error:
        raise fail(str(error)) from None


@app.command()
def webhooks() -> None:
    """Run the webhook sender: signed deliveries of job events, with retries."""
    settings = settings_or_fail()
    configure_logging(settings.log_level, settings.log_format)
    from worker.webhooks.main import serve_webhooks

    serve_webhooks(settings)


def _preflight_models(settings: Settings, task_names: str):  # type: ignore[no-untyped-def]
    """Find every served model's files now, so missing models are clear lines at start.

    Every model is looked for before the command ends, and each missing one gets its own
    `textq:` line, so one start names all the settings to fix.
    """
    from shared.states import Task
    from worker import model_registry

    try:
        tasks = [Task.parse(name.strip()) for name in task_names.split(",") if name.strip()]
    except ValueError as error:
        raise fail(f"unknown task in TEXTQ_WORKER_TASKS / --tasks: {error}") from None
    wanted = [name.strip() for name in settings.worker_models.split(",") if name.strip()]
    try:
        served = settings.catalogue.served_by_worker(tasks, wanted)
    except LookupError as error:
        raise fail(f"TEXTQ_WORKER_MODELS / --models: {error.args[0]}") from None
    return _find_all(
        {
            entry.name: functools.partial(model_registry.resolve_entry, settings, entry)
            for entry in served
        }
    )


def _find_all(finders: dict[K, Callable[[], V]]) -> dict[K, V]:
    """Run every model finder; return what each found, or end the command naming each
    model not found (a `textq:` line each, in the finders' order)."""
    from worker.model_registry import ModelUnavailable

    found: dict[K, V] = {}
    missing: list[str] = []
    for key, find in finders.items():
        try:
            found[key] = find()
        except ModelUnavailable as error:
            missing.append(str(error))
    if missing:
        for message in missing[:-1]:
            typer.echo(f"textq: {message}", err=True)
        raise fail(missing[-1])
    return found


@db_app.command("upgrade")
def db_upgrade(
    wait: Annotated[float, typer.Option(help="Seconds to wait for the database.")] = 60.0,
) -> None:
    """Apply the database migrations (waits for the database to answer first)."""
    settings = settings_or_fail()
    configure_logging(settings.log_level, settings.log_format)
    before, after = _upgrade(settings, wait_s=wait)
    if before is None:
        typer.echo(f"database created: its tables are at revision {after}")
    elif before == after:
        typer.echo(f"database is up to date (revision {after})")
    else:
        typer.echo(f"database upgraded from revision {before} to {after}")


def _upgrade(settings: Settings, *, wait_s: float) -> tuple[str | None, str | None]:
    """Migrate the settings' database; return its revision before and after."""
    from shared.migrate import upgrade, wait_for_database

    url = settings.resolved_database_url
    try:
        if wait_s > 0:
            wait_for_database(url, timeout_s=wait_s)
        return upgrade(url)
    except Exception as error:
        raise fail(f"cannot migrate the database ({type(error).__name__}: {error})") from None


@models_app.command("pull")
@quiet_on_closed_pipe
def models_pull(
    tasks: Annotated[str, typer.Option(help="Tasks whose models to fetch.")] = (
        "sentiment,summarize"
    ),
) -> None:
    """Fetch every catalogue model of the tasks into the local cache, so workers start
    without network.

    With sentiment comes the embedding model that puts texts in categories
    (TEXTQ_EMBEDDING_MODEL), which workers load only when a job asks for categories.
    """
    from shared.states import Task
    from worker import model_registry

    settings = settings_or_fail()
    try:
        wanted = [Task.parse(name.strip()) for name in tasks.split(",") if name.strip()]
    except ValueError as error:
        raise fail(f"unknown task in --tasks: {error}") from None
    finders: dict[str, Callable[[], model_registry.ModelFiles | model_registry.ResolvedModel]] = {
        f"{entry.task.value} {entry.name}": functools.partial(
            model_registry.resolve_entry, settings, entry
        )
        for task in wanted
        for entry in settings.catalogue.of_task(task)
    }
    if Task.SENTIMENT in wanted:
        finders["embedding"] = functools.partial(model_registry.resolve_embedding, settings)
    for name, files in _find_all(finders).items():
        typer.echo(f"{name}: {files.source} at {files.revision} in {files.path}")


@models_app.command("list")
@quiet_on_closed_pipe
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Show the catalogue's models (as GET /v1/models does) and what each worker serves.

    An operator's command: it reads this machine's settings and the server's database, so run
    it where the server runs, with its environment. Clients ask GET /v1/models.
    """
    import json

    from shared import worker_registry
    from shared.catalogue_status import describe_models
    from shared.db import Database
    from shared.models import utcnow
    from shared.states import Task

    settings = settings_or_fail()
    configured = {
        task.value: {"model": settings.model_for(task), "revision": settings.revision_for(task)}
        for task in Task
    }
    embedded = settings.data_dir / "textq.db"
    if settings.database_url is None and not embedded.exists():
        # Connecting would create an empty database file where none should be.
        raise fail(
            f"no textq database at {embedded}: run this where the server runs, with its "
            "TEXTQ_DATA_DIR or TEXTQ_DATABASE_URL (clients: GET /v1/models)"
        )
    db = Database(settings.resolved_database_url, application_name="textq-cli")
    try:
        with db.read() as session:
            found = worker_registry.list_workers(session)
            models = describe_models(
                session, settings.catalogue, sweep_interval_s=settings.sweep_interval_s
            )
    except Exception as error:
        raise fail(f"cannot read the workers from the database ({error})") from None
    finally:
        db.dispose()
    now = utcnow()
    workers = [
        {
            "name": w.name,
            "device": w.device,
            "dtype": w.dtype,
            "models": w.models,
            "served": worker_registry.served_entries(w),
            "live": worker_registry.is_live(w, sweep_interval_s=settings.sweep_interval_s, now=now),
            "last_seen_s": round((now - w.last_seen_at).total_seconds(), 1),
        }
        for w in found
    ]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "models": [model.model_dump(mode="json") for model in models],
                    "configured": configured,
                    "workers": workers,
                },
                indent=2,
            )
        )
        return
    for model in models:
        pin = model.revision or "newest"
        mark = "  (default)" if model.default else ""
        typer.echo(f"{model.task.value} {model.name}: {model.source} @ {pin}{mark}")
        for worker in model.workers:
            state = f"loaded @ {worker.revision}" if worker.loaded else "loads on first job"
            if worker.error:
                state = f"cannot load it: {worker.error}"
            typer.echo(f"    {worker.name}  {worker.device} {worker.dtype}  {state}")
        if not model.workers:
            typer.echo("    no live worker serves it")
    if not workers:
        typer.echo("no worker has registered with this database", err=True)
    for worker in workers:
        state = "live" if worker["live"] else f"not seen for {worker['last_seen_s']:.0f} s"
        typer.echo(f"{worker['name']}  {worker['device']} {worker['dtype']}  {state}")
        for entry in worker["served"]:
            loaded = f"@ {entry['revision']}" if entry.get("loaded") else "(not loaded)"
            if entry.get("error"):
                loaded = f"(cannot load it: {entry['error']})"
            typer.echo(f"    {entry['task']} {entry.get('name') or ''}: {entry['model']} {loaded}")


@models_app.command("shadow")
@quiet_on_closed_pipe
def models_shadow(
    name: Annotated[str, typer.Argument(help="A default with a shadow, or its candidate.")],
    window_h: Annotated[float, typer.Option(min=0.01, help="Hours back to compare over.")] = 24,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Compare a default and its shadow candidate on every tenant's texts (the database's)."""
    from shared.db import Database
    from shared.shadow.reads import NoShadowComparison, shadow_report
    from textq.shadow_display import print_shadow_report

    settings = settings_or_fail()
    db = Database(settings.resolved_database_url, application_name="textq-cli")
    try:
        with db.read() as session:
            report = shadow_report(
                session, settings.catalogue, name, window_h=window_h, tenant_id=None
            )
    except NoShadowComparison as error:
        raise fail(error.detail) from None
    except Exception as error:
        raise fail(f"cannot read the comparison from the database ({error})") from None
    finally:
        db.dispose()
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    print_shadow_report(report)


@keys_app.command("create")
@quiet_on_closed_pipe
def keys_create(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for (made if new).")],
    name: Annotated[str, typer.Option(help="A note on what the key is for.")] = "",
    expires_in_days: Annotated[
        float | None, typer.Option(help="Days until the key stops working.")
    ] = None,
) -> None:
    """Make an API key; it is printed once, alone on the last line, and stored only hashed."""
    from shared import api_keys
    from shared.db import Database

    settings = settings_or_fail()
    db = Database(settings.resolved_database_url, application_name="textq-cli")
    with db.write() as session:
        made = api_keys.create_key(
            session, tenant_id=tenant, name=name, expires_in_days=expires_in_days
        )
    db.dispose()
    if not settings.requires_api_key:
        # Else a new user believes tenants are kept apart while any key, even a made-up
        # one, is let in.
        why = "the embedded SQLite default" if settings.auth == "auto" else "TEXTQ_AUTH=off"
        typer.echo(
            f"note: this server does not check keys ({why}): the key is stored, but "
            "every request is let in, with or without one; set TEXTQ_AUTH=required (or use "
            "Postgres, TEXTQ_DATABASE_URL) to require keys and keep tenants apart",
            err=True,
        )
    expiry = f", expires {made.expires_at:%Y-%m-%d %H:%M} UTC" if made.expires_at else ""
    typer.echo(f"key {made.prefix} for tenant {made.tenant_id}{expiry}; it is not shown again:")
    typer.echo(made.key)


@keys_app.command("list")
@quiet_on_closed_pipe
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
) -> None:
    """List keys by prefix (the keys themselves are not stored)."""
    from shared import api_keys
    from shared.db import Database
    from shared.models import utcnow

    db = Database(settings_or_fail().resolved_database_url, application_name="textq-cli")
    with db.read() as session:
        found = api_keys.list_keys(session, tenant_id=tenant)
        if not found:
            typer.echo(f"no keys for tenant {tenant}" if tenant else "no keys", err=True)
        for key in found:
            state = (
                "revoked"
                if key.revoked_at
                else "expired"
                if key.expires_at and key.expires_at <= utcnow()
                else "active"
            )
            typer.echo(
                f"{key.prefix}  {key.tenant_id}  {state}  created {key.created_at:%Y-%m-%d}  "
                f"{key.name}".rstrip()
            )
    db.dispose()


@keys_app.command("revoke")
def keys_revoke(prefix: Annotated[str, typer.Argument(help="The key's prefix.")]) -> None:
    """Revoke a key: API processes refuse it within TEXTQ_API_KEY_CACHE_S (5 s)."""
    from shared import api_keys
    from shared.db import Database

    db = Database(settings_or_fail().resolved_database_url, application_name="textq-cli")
    with db.write() as session:
        revoked = api_keys.revoke_key(session, prefix)
    db.dispose()
    if not revoked:
        raise fail(f"no active key with prefix {prefix!r}")
    typer.echo(f"key {prefix} revoked")


@tenants_app.command("retention")
def tenants_retention(
    tenant: Annotated[str, typer.Argument(help="The tenant.")],
    days: Annotated[
        int | None,
        typer.Option(help="Days its finished jobs keep their data; 0: forever; omit: default."),
    ] = None,
) -> None:
    """Set how long a tenant's finished jobs keep inputs and results (TEXTQ_RETENTION_DAYS)."""
    from shared.db import Database
    from shared.models import Tenant

    if days is not None and days < 0:
        raise fail("--days must be 0 (forever) or more")
    db = Database(settings_or_fail().resolved_database_url, application_name="textq-cli")
    with db.write() as session:
        row = session.get(Tenant, tenant)
        if row is None:
            raise fail(f"no tenant {tenant!r} (`textq keys create --tenant` makes one)")
        row.retention_days = days
    db.dispose()
    shown = "the default" if days is None else "forever" if days == 0 else f"{days} days"
    typer.echo(f"tenant {tenant} keeps finished jobs' data for {shown}")


client_commands.add_client_commands(app)


def main() -> None:
    app()
