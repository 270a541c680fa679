"""The `pybuild` command: a thin argparse layer over `pybuild.api`.

`pybuild -f Dockerfile .` means `pybuild build -f Dockerfile .`. Heavy modules are
imported inside the command functions so that start-up stays light.
"""
from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms of CLI start-up)
if TYPE_CHECKING:
    from typing import Sequence

COMMANDS = ("build", "run", "import", "load", "save", "tag", "images", "rmi", "inspect",
            "pull", "push", "login", "logout", "history", "du", "prune")


def _terminal_columns() -> int:
    """`shutil.get_terminal_size().columns`, found the same way (COLUMNS, else stdout's
    terminal, else 80) without importing shutil (with bz2 and lzma: ~2 ms of every start)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):  # no stdout, or not a terminal
            columns = 0
    return columns or 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, told the width it would ask shutil for: argparse makes one
    for every argument added (to check its metavar), so `shutil` was imported by every
    command. tests/test_cli_startup.py checks the width and the help are argparse's."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        if width is None:
            width = _terminal_columns() - 2  # what HelpFormatter does with shutil's
        super().__init__(prog, indent_increment, max_help_position, width)


class _OnlyArgsOf:
    """`add_subparsers()` that makes the parser of one command only (`only`; None: all;
    "": none, for `--help`, `--version` and no command, which need only the list).
    Every command is still a choice, with its help line in `pybuild --help` (argparse
    reads only these two to list and check commands); the others' parsers are never used
    for this command line (`_command_of` names the one argparse will pick), and making
    them all costs ~3 ms of every start (gettext look-ups and a help formatter per
    argument). tests/test_cli_startup.py checks every help text is unchanged."""

    class _Ignored:
        def add_argument(self, *args, **kwargs) -> None:
            pass

    def __init__(self, sub, only: str | None):
        self.sub, self.only = sub, only

    def add_parser(self, name: str, **kwargs):
        if self.only in (None, name):
            return self.sub.add_parser(name, formatter_class=_HelpFormatter, **kwargs)
        # what argparse's add_parser records of a command, without its parser
        if "help" in kwargs:
            self.sub._choices_actions.append(
                self.sub._ChoicesPseudoAction(name, (), kwargs["help"]))
        self.sub._name_parser_map[name] = None
        return self._Ignored()


def _build_parser(only: str | None = None) -> argparse.ArgumentParser:
    from pybuild import __version__

    p = argparse.ArgumentParser(
        prog="pybuild", description="Build OCI images from Dockerfiles, and run them.",
        formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"pybuild {__version__}")
    p.add_argument("--root", help="store directory (default $PYBUILD_ROOT or ~/.local/share/pybuild)")
    sub = _OnlyArgsOf(p.add_subparsers(dest="cmd", metavar="COMMAND"), only)

    b = sub.add_parser("build", help="build an image from a Dockerfile (the default command)")
    b.add_argument("context", nargs="?", default=".", help="build context directory")
    b.add_argument("-f", "--file", help="Dockerfile path ('-' reads stdin); default CONTEXT/Dockerfile")
    b.add_argument("-t", "--tag", action="append", default=[], help="name:tag (repeatable)")
    b.add_argument("--build-arg", action="append", default=[], metavar="NAME[=VALUE]")
    b.add_argument("--target", help="build this stage and what it needs")
    b.add_argument("--network", default="default", choices=("default", "none", "host"),
                   help="network of RUN steps (default: a private one with only loopback; "
                        "see docs/network.md)")
    b.add_argument("--secret", action="append", default=[], metavar="id=ID[,src=FILE|,env=VAR]",
                   help="a secret for RUN --mount=type=secret (repeatable)")
    b.add_argument("--ssh", action="append", default=[], metavar="default|ID[=SOCKET|KEY]",
                   help="an SSH agent for RUN --mount=type=ssh (repeatable)")
    b.add_argument("--no-cache", action="store_true", help="run every step")
    b.add_argument("-o", "--output", action="append", default=[],
                   help="type=oci|docker|image|registry|local|tar[,dest=PATH][,name=REF]"
                        "[,compression=gzip|zstd|uncompressed][,compression-level=N]"
                        "[,force-compression=true][,oci-mediatypes=true|false]"
                        "[,rewrite-timestamp=true]; a bare PATH means type=local")
    b.add_argument("--progress", default="auto", choices=("auto", "tty", "plain", "quiet"))
    b.add_argument("--jobs", type=int, help="steps run at once (default: number of cores)")
    b.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE[,STAGE]",
                   help="run the steps of these stages even when cached")
    b.add_argument("--pull", action="store_true", help="resolve base images again")
    b.add_argument("--push", action="store_true", help="push every -t name to its registry")
    b.add_argument("--cache-to", action="append", default=[],
                   metavar="type=registry,ref=REF|type=local,dest=DIR|type=inline[,mode=min|max]",
                   help="export the build cache (repeatable; docs/cache.md)")
    b.add_argument("--cache-from", action="append", default=[],
                   metavar="REF|type=registry,ref=REF|type=local,src=DIR",
                   help="import a build cache; layers are fetched only when needed")
    _registry_flags(b)
    b.add_argument("--explain", action="store_true",
                   help="say why each step that missed the cache did")
    b.add_argument("-q", "--quiet", action="store_true", help="print only the image digest")
    b.add_argument("--check", action="store_true",
                   help="run the build checks only (nothing is built); exit 1 on a violation")

    r = sub.add_parser("run", help="run a command in a new container")
    r.add_argument("image", help="image reference, or an OCI/docker-archive tarball")
    r.add_argument("args", nargs=argparse.REMAINDER, metavar="COMMAND",
                   help="command and arguments (default: the image's ENTRYPOINT/CMD)")
    r.add_argument("--rm", action="store_true", help="remove the container when it exits")
    r.add_argument("-e", "--env", action="append", default=[], metavar="NAME[=VALUE]")
    r.add_argument("-w", "--workdir")
    r.add_argument("-u", "--user")
    r.add_argument("--entrypoint")
    r.add_argument("--network", default="none", choices=("none", "host"))

    i = sub.add_parser("import", help="make a one-layer image from a rootfs directory or tarball")
    i.add_argument("source")
    i.add_argument("reference", nargs="?")
    i.add_argument("-t", "--tag", dest="tag_opt")

    ld = sub.add_parser("load", help="load images from an OCI or docker-archive tarball")
    ld.add_argument("-i", "--input", required=True)

    sv = sub.add_parser("save", help="write images to a tarball")
    sv.add_argument("images", nargs="+")
    sv.add_argument("-o", "--output", required=True)
    sv.add_argument("--format", default="oci", choices=("oci", "docker"))
    sv.add_argument("--compression", choices=("gzip", "zstd", "uncompressed"),
                    help="layer compression (default: as stored)")
    sv.add_argument("--compression-level", type=int, metavar="N")
    sv.add_argument("--force-compression", action="store_true",
                    help="recompress layers already in that compression")
    sv.add_argument("--rewrite-timestamp", action="store_true",
                    help="clamp file mtimes in layers to $SOURCE_DATE_EPOCH")

    t = sub.add_parser("tag", help="give an image another name")
    t.add_argument("source")
    t.add_argument("target")

    sub.add_parser("images", help="list images in the local store")

    rm = sub.add_parser("rmi", help="remove image names from the local store")
    rm.add_argument("images", nargs="+")

    ins = sub.add_parser("inspect", help="print an image's manifest and config as JSON")
    ins.add_argument("image")

    sub.add_parser("du", help="show the store's disk usage and what prune would free")
    pr = sub.add_parser("prune", help="remove build cache not needed by tagged images")
    pr.add_argument("-a", "--all", action="store_true",
                    help="remove all build cache, not only what tagged images don't use")
    pr.add_argument("--keep-storage", metavar="SIZE",
                    help="remove least recently used cache only until the store fits (e.g. 10GB)")
    pr.add_argument("--filter", action="append", default=[], metavar="until=DURATION",
                    help="only remove cache unused for DURATION (e.g. until=24h)")

    hi = sub.add_parser("history", help="show the history of an image (newest first)")
    hi.add_argument("image")
    hi.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    hi.add_argument("-q", "--quiet", action="store_true", help="only layer digests")

    pl = sub.add_parser("pull", help="pull an image from a registry into the local store")
    pl.add_argument("image")
    pl.add_argument("--platform", help="os/arch[/variant] (default: this machine's)")
    _registry_flags(pl)
    ps = sub.add_parser("push", help="push an image to a registry")
    ps.add_argument("image")
    ps.add_argument("dest", nargs="?", help="push under this name instead")
    _registry_flags(ps)
    li = sub.add_parser("login", help="log in to a registry (kept in ~/.docker/config.json)")
    li.add_argument("registry", nargs="?", default="docker.io")
    li.add_argument("-u", "--username", required=True)
    li.add_argument("-p", "--password")
    li.add_argument("--password-stdin", action="store_true")
    _registry_flags(li)
    lo = sub.add_parser("logout", help="forget a registry's credentials")
    lo.add_argument("registry", nargs="?", default="docker.io")
    return p


def _registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="allow plain HTTP / unverified TLS for this registry "
                        "(also $PYBUILD_INSECURE_REGISTRIES)")


def _first_word(argv: list[str]) -> int:
    """Index of the first argument after the global `--root DIR` / `--root=DIR` options
    (len(argv) when there is none): where the command is, or should be."""
    i = 0
    while i < len(argv):
        if argv[i] == "--root":
            i += 2
        elif argv[i].startswith("--root="):
            i += 1
        else:
            return i
    return len(argv)


def _split_args(argv: list[str]) -> list[str]:
    """Insert `build` when no command is named (`pybuild -f Dockerfile .`)."""
    i = _first_word(argv)
    if i == len(argv) or argv[i] in COMMANDS or argv[i] in ("-h", "--help", "--version"):
        return argv
    return argv[:i] + ["build"] + argv[i:]


def _command_of(argv: list[str]) -> str | None:
    """The command `argv` (after `_split_args`) names; None when it names none: help,
    version or nothing, which argparse answers (or stops at, a bad `--root`) with the
    top-level arguments and the list of commands alone."""
    i = _first_word(argv)
    return argv[i] if i < len(argv) and argv[i] in COMMANDS else None


def _build_args(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:  # docker: `--build-arg NAME` takes the value from the environment
            if k not in os.environ:
                continue
            v = os.environ[k]
        out[k] = v
    return out


def cmd_build(a) -> int:
    from pybuild import buildmemo

    # a rebuild with nothing changed: served from the whole-build memo before anything
    # heavy is imported (pybuild/buildmemo.py); any doubt runs the build
    if buildmemo.serve(a, _build_args(a.build_arg)):
        return 0
    _compile_cache()
    if not a.check:  # the sandbox's fork server starts while the build imports and plans
        from pybuild.sandbox.forkserver import prestart
        prestart()
    from pybuild import api

    text = None
    dockerfile = a.file
    if a.file == "-":
        text = sys.stdin.read()
        dockerfile = None
    if a.check:
        return _check(a, dockerfile, text)
    progress = "quiet" if a.quiet else a.progress
    result = api.build(a.context, dockerfile, dockerfile_text=text, tags=a.tag,
                       build_args=_build_args(a.build_arg), target=a.target, network=a.network,
                       no_cache=a.no_cache, outputs=a.output, progress=progress, root=a.root,
                       jobs=a.jobs, no_cache_filter=a.no_cache_filter, pull=a.pull,
                       explain=a.explain, secrets=a.secret, ssh=a.ssh, push=a.push,
                       insecure_registries=a.insecure_registry, cache_to=a.cache_to,
                       cache_from=a.cache_from)
    if a.quiet:
        print(result.manifest_digest)
    else:
        sys.stderr.write(f"image {result.manifest_digest}\n")
        for t in result.tags:
            sys.stderr.write(f"naming to {t}\n")
        for o in result.outputs:
            sys.stderr.write(f"exported to {o}\n")
    return 0


def _check(a, dockerfile: str | None, text: str | None) -> int:
    """`build --check`: the warnings with description, URL and lines; exit 1 when any
    rule fired (as `docker build --check` does)."""
    from pybuild import api
    from pybuild.buildcheck import format_report
    from pybuild.errors import DefinitionError

    if text is None:
        path = dockerfile or os.path.join(a.context, "Dockerfile")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            sys.stderr.write(f"ERROR: failed to read Dockerfile: {path}: {e.strerror}\n")
            return 1
    filename = os.path.basename(dockerfile) if dockerfile else "Dockerfile"
    lines = text.split("\n")
    try:
        warnings = api.check(a.context, dockerfile, dockerfile_text=text,
                             build_args=_build_args(a.build_arg), target=a.target, root=a.root)
    except DefinitionError as e:
        found = getattr(e, "warnings", ())
        if found:
            sys.stdout.write(format_report(found, filename, lines))
        raise
    sys.stdout.write(format_report(warnings, filename, lines))
    return 1 if warnings else 0


def cmd_run(a) -> int:
    from pybuild import api

    command = list(a.args)
    if command and command[0] == "--":
        command = command[1:]
    from pybuild.sandbox.namespaces import ExecFailed

    try:
        result = api.run(a.image, command or None, env=a.env, workdir=a.workdir, user=a.user,
                         network=a.network, rm=a.rm, entrypoint=a.entrypoint, root=a.root)
    except ExecFailed as e:  # as docker: 127 not found, 126 not executable
        sys.stderr.write(f"ERROR: {e}\n")
        return e.exit_code
    return result.exit_code


def cmd_import(a) -> int:
    from pybuild import api

    ref = a.tag_opt or a.reference
    loaded = api.import_rootfs(a.source, ref, root=a.root)
    print(loaded.manifest_digest)
    return 0


def cmd_load(a) -> int:
    from pybuild import api

    for img in api.load(a.input, root=a.root):
        names = ", ".join(img.tags) if img.tags else "(untagged)"
        print(f"Loaded image: {names} {img.manifest_digest}")
    return 0


def cmd_save(a) -> int:
    from pybuild import api

    options = None
    if a.compression or a.compression_level is not None or a.force_compression \
            or a.rewrite_timestamp:
        spec = ",".join(filter(None, (
            f"type={a.format},dest=-",
            f"compression={a.compression or 'gzip'}",
            f"compression-level={a.compression_level}" if a.compression_level is not None else "",
            "force-compression=true" if a.force_compression else "",
            "rewrite-timestamp=true" if a.rewrite_timestamp else "")))
        options = api.OutputSpec.parse(spec).image
    api.save(a.images, a.output, format=a.format, root=a.root, options=options,
             source_date_epoch=api.source_date_epoch())
    return 0


def cmd_history(a) -> int:
    from pybuild import api

    rows = api.history(a.image, root=a.root)
    if a.quiet:
        for r in rows:
            print(r.layer_digest or "<missing>")
        return 0
    print(f"{'LAYER':<14} {'CREATED':<21} {'CREATED BY':<46} {'SIZE':>9}  COMMENT")
    for r in rows:
        layer = r.layer_digest or "<missing>"
        created_by = r.created_by.replace("\n", " ")
        if not a.no_trunc:
            layer = layer[7:19] if r.layer_digest else layer
            created_by = created_by if len(created_by) <= 45 else created_by[:44] + "…"
        print(f"{layer:<14} {r.created or '':<21} {created_by:<46} {_human(r.size):>9}  "
              f"{r.comment}")
    return 0


def cmd_tag(a) -> int:
    from pybuild import api

    api.tag(a.source, a.target, root=a.root)
    return 0


def cmd_images(a) -> int:
    from pybuild import api

    rows = api.images(root=a.root)
    print(f"{'REPOSITORY:TAG':<48} {'DIGEST':<19} {'SIZE':>10}  CREATED")
    for r in rows:
        print(f"{r.name:<48} {r.manifest_digest[7:19]:<19} {_human(r.size):>10}  {r.created}")
    return 0


def cmd_rmi(a) -> int:
    from pybuild import api

    for ref in a.images:
        api.rmi(ref, root=a.root)
        print(f"Untagged: {ref}")
    return 0


def cmd_inspect(a) -> int:
    import json

    from pybuild import api

    image = api.get_image(a.image, a.root)
    doc = {"Digest": image.manifest_digest,
           "Manifest": json.loads(image.manifest.to_json()),
           "Config": json.loads(image.config.to_json())}
    print(json.dumps(doc, indent=2))
    return 0


def cmd_pull(a) -> int:
    from pybuild import api

    r = api.pull(a.image, platform=a.platform, root=a.root,
                 insecure_registries=a.insecure_registry)
    sys.stderr.write(f"pulled {r.ref} ({r.platform}): {r.blobs_fetched} blobs, "
                     f"{_human(r.bytes_fetched)} fetched\n")
    print(f"Digest: {r.manifest_digest}")
    return 0


def cmd_push(a) -> int:
    from pybuild import api

    r = api.push(a.image, a.dest, root=a.root, insecure_registries=a.insecure_registry)
    sys.stderr.write(f"pushed {r.ref}: {r.uploaded} uploaded ({_human(r.bytes_uploaded)}), "
                     f"{r.mounted} mounted, {r.existing} already there\n")
    print(f"Digest: {r.digest}")
    return 0


def cmd_login(a) -> int:
    from pybuild import api
    from pybuild.errors import PybuildError

    password = a.password
    if a.password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    elif password is None:
        import getpass
        password = getpass.getpass("Password: ")
    if not password:
        raise PybuildError("login needs a password (-p, --password-stdin or typed)")
    api.login(a.registry, a.username, password, insecure_registries=a.insecure_registry)
    print("Login Succeeded")
    return 0


def cmd_logout(a) -> int:
    from pybuild import api

    removed = api.logout(a.registry)
    print(f"Removing login credentials for {a.registry}" if removed
          else f"Not logged in to {a.registry}")
    return 0


def cmd_du(a) -> int:
    from pybuild import api

    usage = api.du(root=a.root)
    print(f"{'TYPE':<16} {'COUNT':>7} {'SIZE':>10} {'RECLAIMABLE':>12}")
    for r in usage.rows:
        size = _human(r.size) if r.kind != "build records" else "-"
        recl = _human(r.reclaimable) if r.kind != "build records" else "-"
        print(f"{r.kind:<16} {r.count:>7} {size:>10} {recl:>12}")
    print(f"{'total':<16} {'':>7} {_human(usage.size):>10} {_human(usage.reclaimable):>12}")
    return 0


def cmd_prune(a) -> int:
    from pybuild import api

    def wait() -> None:
        sys.stderr.write("waiting for running builds to finish...\n")

    r = api.prune(all=a.all, keep_storage=a.keep_storage, filters=a.filter, root=a.root,
                  wait=wait)
    print(f"removed {r.records} cache records, {r.blobs} blobs, {r.snapshots} snapshots, "
          f"{r.cache_mounts} cache mounts")
    print(f"Total reclaimed space: {_human(r.freed)}")
    return 0


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.1f}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    return f"{n}B"


def _compile_cache() -> None:
    """Reuse the compiled methods of dataclasses from earlier runs (pybuild/dccache.py):
    called before the modules that define them are imported."""
    from pybuild.dccache import install

    install()


def main(argv: Sequence[str] | None = None) -> int:
    args = _split_args(list(sys.argv[1:] if argv is None else argv))
    parser = _build_parser(_command_of(args) or "")
    a = parser.parse_args(args)
    if a.cmd is None:
        parser.print_help()
        return 1
    handler = globals()[f"cmd_{a.cmd}"]
    if a.cmd != "build":  # build first asks its memo, which needs no dataclass
        _compile_cache()
    from pybuild.errors import DefinitionError, PybuildError

    try:
        return handler(a)
    except DefinitionError as e:
        sys.stderr.write(e.render() + "\n")
        return 1
    except PybuildError as e:
        sys.stderr.write(f"ERROR: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    finally:
        if argv is None:  # the process's own command line: it exits next
            _skip_exit_collection()


def _skip_exit_collection() -> None:
    """The command's garbage is collected now, once (its sqlite connections close, its
    temp files go), and what is left alive, ~20,000 objects of the imported modules, is
    frozen: interpreter shutdown would otherwise walk them all in two more collections,
    ~8 ms of a build's exit after its last line. Not done for in-process callers of
    main(argv), whose objects must stay collectable."""
    import gc

    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
