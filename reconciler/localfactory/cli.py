"""``reconcile-factory``: create, serve and drive the local factory.

The factory lives in a directory: ``--local PATH``, else ``$RECONCILE_LOCAL``, else the user state
directory (the same place ``reconcile`` uses when no API URL is configured).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from reconciler import durations, terminal
from reconciler.safetext import printable

from . import default_path

if TYPE_CHECKING:
    from .store import Store


def parse_duration(text: str) -> int:
    """Durations as manifests write them (``1h``, ``1d12h``, ``2w``) or plain seconds, at most 3650 days."""
    text = text.strip().lower()
    try:
        return durations.parse_duration(f"{text}s" if text.isdigit() else text)
    except ValueError as exc:
        raise click.BadParameter(f"the duration {exc}") from None


def _say(message: str, err: bool = False) -> None:
    """One line of output, escaped (reconciler.safetext): paths, names and the factory's values are the
    user's or the factory's text, so a newline in one cannot forge a line (``::error::`` in a CI log), nor a
    control character ring, recolour or reorder the terminal."""
    click.echo(printable(message), err=err)


class _Error(click.ClickException):
    """A refusal shown as ``error: ...``, the prefix every command of both CLIs uses; its text is escaped
    when it is made (each line of a factory's error list on its own)."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(terminal.error_line(self.format_message()), err=True)  # escaped when made


class _OneLineErrors(terminal.OneLineUsage):
    """For every command and group: a usage error is one line and exits 1, not click's 2 (CI reads 2 as
    "changes pending"), and a user's mistake or a damaged/busy database is one line on stderr and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        import sqlite3

        from reconciler.errors import UserError

        from .errors import ApiError

        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise terminal.UsageMistake.of(e) from None
        except click.ClickException as e:
            if isinstance(e, _Error):
                raise
            raise _Error(printable(e.format_message())) from None
        except ApiError as e:
            detail = "".join(f"\n  {printable(x)}" for x in e.errors[:20])
            raise _Error(f"{printable(e.message)}{detail}") from None
        except UserError as e:
            raise _Error(printable(str(e))) from None
        except sqlite3.Error as e:
            from .store import Store

            c = ctx.find_object(Ctx)
            where = Store.in_dir(c.path) if c else None
            raise _Error(printable(where.describe(e) if where else f"local factory database: {e}")) from None


class FactoryCommand(_OneLineErrors, click.Command):
    pass


class FactoryGroup(_OneLineErrors, click.Group):
    command_class = FactoryCommand
    group_class = type  # subgroups are FactoryGroups too


class Ctx:
    def __init__(self, local: str | None):
        self.path = Path(local).expanduser() if local else default_path()

    def store(self, must_exist: bool = True) -> Store:
        from .store import Store

        st = Store.in_dir(self.path)
        if must_exist:
            if not st.exists():
                raise click.ClickException(
                    f"no local factory at {self.path}: run `reconcile-factory init --demo` first"
                )
            _say_modes(self.path)  # before the first connection creates WAL files with the old mode
            st.check()  # UserError (one line) for a file that is not a factory database
        return st


def _say_modes(path: Path) -> None:
    from .store import make_private

    note = make_private(path)
    if note:
        _say(note, err=True)


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(cls=FactoryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--local",
    envvar="RECONCILE_LOCAL",
    metavar="PATH",
    help="Factory directory (default: $RECONCILE_LOCAL, else the user state directory).",
)
@click.pass_context
def main(ctx: click.Context, local: str | None) -> None:
    """The local factory: the Foundries waves API over SQLite with a simulated device fleet."""
    ctx.obj = Ctx(local)


@main.command()
@click.option("--demo", is_flag=True, help="The demo factory 'demo' (2,000 devices unless --devices).")
@click.option("--name", default=None, help="Factory name (default: demo).")
@click.option(
    "--devices",
    "devices_n",
    type=click.IntRange(0, 10_000_000),
    default=None,
    help="Production devices (default 2000 with --demo, else 0).",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the fleet and its simulation.")
@click.option("--start", default=None, metavar="RFC3339", help="Simulated start time (default: now).")
@click.option(
    "--offline-keys",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="Offline targets keys, each in its own archive; the production root needs all of them "
    "(targets threshold: online key + N), so waves need `sign` with the others.",
)
@pass_ctx
def init(
    c: Ctx, demo: bool, name: str | None, devices_n: int | None, seed: int, start: str | None, offline_keys: int
) -> None:
    """Create a factory: keys, roots, CI builds 40-60, groups, production targets, devices."""
    from reconciler.errors import UserError

    from . import demo as demo_mod
    from .store import LATEST, iso, parse_time

    if start is not None:
        try:
            start_ts = parse_time(start)
        except (ValueError, OverflowError):
            raise click.BadParameter(f"{start!r} is not an RFC 3339 time", param_hint="--start") from None
        try:
            demo_mod.check_start(start_ts)
        except UserError:
            raise click.ClickException(
                f"--start {start!r} is out of range: the simulated time must lie between "
                f"1970-01-01T00:00:00Z and {iso(LATEST)}"
            ) from None
    else:
        start_ts = None
    if name is not None:
        try:
            demo_mod.check_name(name)  # before any file is written
        except UserError as e:
            raise click.ClickException(f"--name {e}") from None
    if devices_n is None:
        devices_n = 2000 if demo else 0
    progress = terminal.Progress("Creating devices")
    try:
        result = demo_mod.init_factory(
            c.path,
            name=name or "demo",
            devices_n=devices_n,
            seed=seed,
            start=start_ts,
            progress=progress,
            offline_keys=offline_keys,
        )
    except demo_mod.FactoryExists as e:
        raise click.ClickException(f"{e}; remove it to start over") from None
    finally:
        progress.close()
    _say_modes(c.path)  # a directory that existed before init becomes private too
    _say(
        f"Created factory '{result.factory}' at {result.path}: {result.devices:,} production and "
        f"{result.ci_devices:,} CI devices in {result.seconds:.1f}s"
    )
    if len(result.keys_archives) == 1:
        _say(f"Operator offline targets key: {result.keys_archive}")
        return
    _say(
        f"Operator offline targets keys (production targets need all {len(result.keys_archives)} "
        f"signatures besides the online key's):"
    )
    for n, (archive, keyid) in enumerate(zip(result.keys_archives, result.key_ids, strict=True), start=1):
        _say(f"  key {n}: {archive} (key id {keyid})")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0 picks a free port (printed)."
)
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--clock",
    "clock_mode",
    type=click.Choice(["simulated", "real"]),
    default="simulated",
    show_default=True,
    help="simulated: time moves only with `advance`. real: it follows wall time "
    "(times --speed); devices check in as it passes, and `advance` still jumps ahead.",
)
@click.option(
    "--speed",
    type=click.FloatRange(0, 1_000_000, min_open=True),
    default=None,
    help="With --clock real: simulated seconds per wall second (3600 = an hour a second; default 1).",
)
@pass_ctx
def serve(c: Ctx, host: str, port: int, threads: int, clock_mode: str, speed: float | None) -> None:
    """Serve the API over HTTP (waitress); every request needs an OSF-TOKEN from `token`.

    Idle and slow connections are shed (serving.py), so open sockets cannot starve real requests."""
    from .app import make_app
    from .clock import RealClock
    from .serving import create_server
    from .writelock import WRITE_WAIT

    if speed is not None and clock_mode != "real":
        raise click.ClickException("--speed needs --clock real: the simulated clock moves only with `advance`")
    st = c.store()
    with st.read() as conn:
        from .store import factory_name, http_date, now

        name = factory_name(conn)
        tokens = conn.execute("SELECT count(*) FROM tokens").fetchone()[0]

    def simulated_date() -> str | None:
        try:
            with st.read() as conn:
                return http_date(now(conn))
        except Exception:  # a Date header must never turn an answer into an error
            return None

    try:
        listening = create_server(
            make_app(st, require_token=True, write_lock=WRITE_WAIT),
            host=host,
            port=port,
            threads=threads,
            date=simulated_date,
        )
    except (OSError, ValueError, OverflowError) as e:
        reason = (getattr(e, "strerror", None) or str(e) or type(e).__name__).rstrip(".")
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason[:1].lower()}{reason[1:]}") from None
    clock = RealClock(st, speed or 1.0) if clock_mode == "real" else None
    described = f"real time x{speed or 1.0:g}" if clock else "simulated time (moves with `advance`)"
    _say(f"Serving factory '{name}' on {', '.join(listening.urls)} (from {c.path}), {described}", err=True)
    if not tokens:
        _say("No API token exists yet: create one with `reconcile-factory token`", err=True)
    sys.stderr.flush()
    if clock:
        clock.start()
    try:
        listening.server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if clock:
            clock.stop()
        listening.server.close()


@main.command()
@click.argument("duration")
@pass_ctx
def advance(c: Ctx, duration: str) -> None:
    """Move simulated time forward by DURATION (1h, 30m, 1d12h); devices check in and update.

    While `serve --clock real` runs, this jumps ahead by DURATION and the clock runs on from there."""
    from . import fleet, store

    seconds = parse_duration(duration)
    st = c.store()
    with st.write() as conn:
        if store.now(conn) + seconds > store.LATEST:
            raise click.ClickException(f"cannot advance past {store.iso(store.LATEST)}, the end of simulated time")
        progress = terminal.Progress("Simulating seconds")
        try:
            stats = fleet.advance(conn, seconds, progress)
        finally:
            progress.close()
        now = store.now(conn)
    _say(
        f"Now {store.iso(now)}: {terminal.plural(stats['updated'], 'device')} updated, "
        f"{terminal.plural(stats['failed'], 'failed install')}, {stats['online']:,} online"
    )


@main.group()
def devices() -> None:
    """Add, import and list devices."""


@devices.command("add")
@click.argument("name")
@click.option("--tag", default="production", show_default=True)
@click.option("--hardware-id", "hwid", default="intel-corei7-64", show_default=True)
@click.option("--version", type=int, default=40, show_default=True, help="Installed target version (0..2147483647).")
@click.option("--uuid", default="", help="Default: a random UUID.")
@click.option("--group", default=None, help="Device group (default: none).")
@click.option("--ci", is_flag=True, help="A CI (non-production) device.")
@pass_ctx
def devices_add(c: Ctx, name: str, tag: str, hwid: str, version: int, uuid: str, group: str | None, ci: bool) -> None:
    """Register one device."""
    from . import devices as dev
    from .store import MAX_INT

    if not 0 <= version <= MAX_INT:
        raise click.ClickException(f"--version {version} is out of range: a version is 0..{MAX_INT}")
    with c.store().write() as conn:
        dev.add_devices(conn, [dev.NewDevice(name, uuid, tag, hwid, version, not ci, group)], "cli")
        d = dev.get_device(conn, name, by_uuid=False)
    _say(f"Added {name} ({d['uuid']})")


@devices.command("move")
@click.argument("name")
@click.argument("group", required=False, default="")
@pass_ctx
def devices_move(c: Ctx, name: str, group: str) -> None:
    """Move a device into GROUP (omit GROUP for no group)."""
    from . import devices as dev

    with c.store().write() as conn:
        dev.patch_device(conn, dev.get_device(conn, name, by_uuid=False), {"group": group})
    _say(f"Moved {name} to {group or 'no group'}")


@devices.command("import", short_help="Register devices from a CSV file.")
@click.argument("csv_file", type=click.File("rb"))
@pass_ctx
def devices_import(c: Ctx, csv_file: IO[bytes]) -> None:
    """Register devices from CSV: name,uuid,group,tag,production,hardware_id,version (header required)."""
    from . import devices as dev

    data = csv_file.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise click.ClickException(f"{csv_file.name}: not UTF-8 text (byte {e.start + 1} is invalid)") from None
    new = dev.parse_csv(text)
    with c.store().write() as conn:
        n = dev.add_devices(conn, new, "cli")
    _say(f"Imported {terminal.plural(n, 'device')}")


@devices.command("list")
@click.option("--group", default=None)
@click.option("--tag", default=None)
@click.option("--prod/--ci", "prod", default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@pass_ctx
def devices_list(c: Ctx, group: str | None, tag: str | None, prod: bool | None, limit: int, page: int) -> None:
    """List devices (name, uuid, group, tag, target, last seen)."""
    from . import devices as dev
    from .groups import group_id

    with c.store().read() as conn:
        if group is not None and group_id(conn, group) is None:
            names = ", ".join(n for (n,) in conn.execute("SELECT name FROM device_groups ORDER BY name")) or "none"
            raise click.ClickException(f"no device group {group!r} (groups: {names})")
        items, total = dev.list_devices(conn, dev.Filters(group=group, tag=tag, prod=prod, limit=limit, page=page))
    _say(f"{'NAME':<14} {'UUID':<36} {'GROUP':<8} {'TAG':<11} {'TARGET':<26} {'PROD':<5} LAST SEEN")
    for d in items:
        _say(
            f"{d['name']:<14} {d['uuid']:<36} {d['device-group'] or '-':<8} {d['tag']:<11} "
            f"{d['target-name']:<26} {'yes' if d['is-prod'] else 'no':<5} {d['last-seen'] or 'never'}"
        )
    _say(f"({len(items)} of {total:,}; page {page})")


@main.command()
@click.option("--offline-threshold", type=click.IntRange(1), default=4, show_default=True, help="Hours.")
@pass_ctx
def status(c: Ctx, offline_threshold: int) -> None:
    """Show the clock, devices, production targets and active waves."""
    from . import factorystatus, store, wavestatus

    with c.store().read() as conn:
        s = factorystatus.factory_status(conn, offline_threshold)
        now = store.now(conn)
        prod = conn.execute("SELECT tag, version FROM prod_targets ORDER BY tag").fetchall()
        active = conn.execute("SELECT name FROM waves WHERE status = 'active' ORDER BY name").fetchall()
        wave_stats = [wavestatus.status(conn, n, offline_threshold) for (n,) in active]
        name = store.factory_name(conn)
    _say(f"Factory '{name}' at {c.path}")
    _say(f"Simulated time: {store.iso(now)}")
    _say(f"Devices: {s['total-devices']:,}")
    for section, label in (("tags", "CI"), ("prod-tags", "production"), ("wave-tags", "in a wave")):
        for t in s[section]:
            versions = ", ".join(f"{x['version']}: {x['devices']:,}" for x in t["targets"])
            _say(
                f"  {label} tag {t['name'] or '(untagged)'}: {terminal.plural(t['devices-total'], 'device')}, "
                f"{t['devices-online']:,} online, latest {t['latest-target']} ({versions})"
            )
            for g in t.get("device-groups") or []:
                _say(
                    f"    group {g['name'] or '(none)'}: {terminal.plural(g['devices-total'], 'device')}, "
                    f"{g['devices-online']:,} online, {g['devices-on-latest']:,} on latest"
                )
    for tag, version in prod:
        _say(f"Production targets: tag {tag} at version {version}")
    for w in wave_stats:
        _say(
            f"Active wave {w['name']} (version {w['version']}, tag {w['tag']}): {w['updated-devices']:,} "
            f"updated, {w['scheduled-devices']:,} scheduled, {w['unscheduled-devices']:,} unscheduled"
        )
    if not wave_stats:
        _say("No active wave")


@main.command()
@click.option("--name", default="operator", show_default=True, help="Who the token acts as (rollout-by, created-by).")
@pass_ctx
def token(c: Ctx, name: str) -> None:
    """Create an API token for `serve`, printed once; only its hash is stored."""
    from . import auth

    with c.store().write() as conn:
        value = auth.create(conn, name)
    _say(value)


def parse_rate(ctx: click.Context, param: click.Parameter, text: str | None) -> int | None:
    """``30%``, ``2.5%`` or ``30`` (percent) -> basis points (1/10,000), 0..100% (a click callback)."""
    if text is None:
        return None
    raw = text.strip().removesuffix("%")
    try:
        value = float(raw)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a percentage such as 30% or 2.5%") from None
    if not 0 <= value <= 100:
        raise click.BadParameter(f"{text!r} is out of range: 0% to 100%")
    return round(value * 100)


@main.command()
@click.argument("version", type=click.IntRange(0, 2**31 - 1))
@click.option("--tag", "tags", multiple=True, default=("main",), show_default=True)
@click.option(
    "--hardware-id", "hwids", multiple=True, default=("intel-corei7-64", "raspberrypi4-64"), show_default=True
)
@click.option(
    "--failure-rate",
    "rate",
    metavar="RATE",
    callback=parse_rate,
    help="Share of devices whose install of this build fails, every "
    "attempt (e.g. 30%); on an existing build, only sets the rate. Rehearses a bad build.",
)
@click.option(
    "--static-deltas/--no-static-deltas",
    "deltas",
    default=None,
    help="Publish the build with static deltas (custom.delta-stats; the default) or without, which "
    "the plan warns about; --static-deltas on an existing build generates its missing deltas.",
)
@pass_ctx
def build(
    c: Ctx, version: int, tags: tuple[str, ...], hwids: tuple[str, ...], rate: int | None, deltas: bool | None
) -> None:
    """Publish CI build VERSION, one target per hardware id; CI devices on its tags update."""
    import sqlite3

    from . import devices as dev
    from . import fleet, targets, waves

    bad = [t for t in tags if not waves.TAG_RE.match(t)]
    if bad:
        raise click.ClickException(f"--tag {bad[0]!r} is not a tag: use 1-100 letters, digits, '_', '.', '+' and '-'")
    bad = [h for h in hwids if not dev.HWID_RE.match(h)]
    if bad:
        raise click.ClickException(
            f"--hardware-id {bad[0]!r} is not a hardware id: use 1-100 letters, digits, '_', '.' and '-'"
        )
    tags, hwids = tuple(dict.fromkeys(tags)), tuple(dict.fromkeys(hwids))
    with c.store().write() as conn:
        exists = conn.execute("SELECT 1 FROM ci_targets WHERE version = ?", (version,)).fetchone() is not None
        if exists and deltas is False:
            raise click.ClickException(
                f"CI build {version} already exists: --no-static-deltas is for a new build "
                "(generated static deltas are never removed)"
            )
        if exists and rate is None and deltas is None:
            raise click.ClickException(f"CI build {version} already exists")
        if not exists:
            try:
                names = targets.add_ci_build(conn, version, list(hwids), list(tags), static_deltas=deltas is not False)
            except sqlite3.IntegrityError:
                raise click.ClickException(f"CI build {version} already exists") from None
            _say(f"Published {', '.join(names)} ({'without' if deltas is False else 'with'} static deltas)")
        elif deltas:
            added = targets.add_static_deltas(conn, version)
            _say(
                f"Generated static deltas for {', '.join(added)}"
                if added
                else f"CI build {version} already has static deltas"
            )
        if rate is not None:
            fleet.set_build_failure(conn, version, rate)
            _say(f"Installs of build {version} fail on {rate / 100:g}% of devices (chosen by the seed)")


if __name__ == "__main__":  # pragma: no cover
    main()
